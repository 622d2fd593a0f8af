"""Adaptive Gauss-Hermite quadrature for one scalar random effect per group (lme4's nAGQ > 1).

With û_g the conditional mode and σ_g = (1 + λ²C_g)^(-1/2) the Laplace approximation's scale,
u = û_g + √2 σ_g x turns each group's integral into a Gauss-Hermite sum over nodes x_k, weights w_k:

    log ∫ p(y_g | λu) φ(u) du ≈ log σ_g − ½ log π + log Σ_k w_k exp(h_g(û_g + √2 σ_g x_k) + x_k²),

h_g(u) = ℓ_g(λu) − u²/2. One node (x = 0, w = √π) is the Laplace approximation. The modes come from
`laplace.row_modes` (implicit derivatives); everything else is differentiated directly.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from . import laplace


def gauss_hermite(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Nodes and weights of n-point Gauss-Hermite quadrature (weight function e^(−x²))."""
    return np.polynomial.hermite.hermgauss(n)


def agq_loglik(model: laplace.RowModel, params, lams, rows, rr: laplace.RandomRows, n_nodes: int) -> jax.Array:
    """The adaptive Gauss-Hermite log-likelihood Σ_g log ∫ … of a one-factor model with a scalar effect."""
    if lams[0].shape != (1, 1) or rr.Q2:
        raise ValueError("adaptive Gauss-Hermite quadrature (nAGQ > 1) needs a single scalar random effect")
    x, w = (jnp.asarray(v) for v in gauss_hermite(n_nodes))
    u1, _ = laplace.row_modes(model, params, lams, rows, rr)
    lam = lams[0][0, 0]
    a1 = rr.z1[:, 0] * lam
    z_hat = a1 * u1[rr.code1, 0]
    c = jnp.zeros(rr.G1).at[rr.code1].add(model.curvature_rows(params, rows, z_hat) * rr.z1[:, 0] ** 2)
    sigma = 1.0 / jnp.sqrt(1.0 + lam * lam * c)
    nodes = u1[:, 0][:, None] + jnp.sqrt(2.0) * sigma[:, None] * x[None, :]           # (G, K)
    z = a1[:, None] * nodes[rr.code1]                                                 # (n, K)
    ll = jax.vmap(lambda zk: model.logdens_rows(params, rows, zk), in_axes=1, out_axes=1)(z)
    per_group = jnp.zeros((rr.G1, n_nodes)).at[rr.code1].add(ll) - 0.5 * nodes ** 2 + x[None, :] ** 2
    total = jax.scipy.special.logsumexp(per_group, b=w[None, :], axis=1)
    return jnp.sum(total + jnp.log(sigma) - 0.5 * jnp.log(jnp.pi))
