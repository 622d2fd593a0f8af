"""The linear mixed model as mathematics: profiled REML/ML criteria of θ over per-group statistics.

Model: y = Xβ + Zb + ε, b = Λ(θ)u, u ~ N(0, σ²I), ε ~ N(0, σ²I), with Z block-diagonal
over the levels of one grouping factor (group g has q columns, Λ is q × q).
Following lme4 (Bates et al. 2015, section 3), with L_g L_gᵀ = ΛᵀZ_gᵀZ_gΛ + I,

    R_ZX,g = L_g⁻¹ΛᵀZ_gᵀX,   c_u,g = L_g⁻¹ΛᵀZ_gᵀy,
    R_X R_Xᵀ = XᵀX − Σ_g R_ZX,gᵀR_ZX,g,   c_β = R_X⁻¹(Xᵀy − Σ_g R_ZX,gᵀc_u,g),
    r² = yᵀy − Σ_g |c_u,g|² − |c_β|²,
    ML deviance   = log|L|² + n (1 + log(2π r²/n)),
    REML criterion = log|L|² + log|R_X|² + (n−p)(1 + log(2π r²/(n−p))).

The data enter only through the sufficient statistics ZᵀZ, ZᵀX, Zᵀy per group and
XᵀX, Xᵀy, yᵀy, so a bootstrap replicate (new y) only recomputes the y parts.
y is centred at a reference β₀ (OLS) so r² suffers no cancellation.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

import jax
import jax.numpy as jnp

from ..model.layout import FactorStructure
from . import linalg


@jax.tree_util.register_dataclass
@dataclass(frozen=True)
class Stats:
    """Sufficient statistics of one LMM (y centred at beta0) and the static structure of Λ.

    ZtZ (G, q, q), ZtX (G, q, p), Zty (G, q), XtX (p, p), Xty (p,), yty (), n ().
    Groups past the real ones are padding with all-zero statistics (they add nothing).
    """

    ZtZ: jax.Array
    ZtX: jax.Array
    Zty: jax.Array
    XtX: jax.Array
    Xty: jax.Array
    yty: jax.Array
    n: jax.Array
    structure: FactorStructure = field(metadata=dict(static=True))

    @property
    def q(self) -> int:
        return self.ZtZ.shape[-1]

    @property
    def p(self) -> int:
        return self.XtX.shape[-1]


def group_stats(buckets, beta0: jax.Array, n_slots: int):
    """Per-group ZᵀZ, ZᵀX, Zᵀ(y − Xβ₀) scattered into `n_slots` groups, and the global XᵀX, Xᵀ(y−Xβ₀), |y−Xβ₀|²."""
    b0 = buckets[0]
    q, p = b0.Z.shape[-1], b0.X.shape[-1]
    ZtZ = jnp.zeros((n_slots, q, q))
    ZtX = jnp.zeros((n_slots, q, p))
    Zty = jnp.zeros((n_slots, q))
    XtX = jnp.zeros((p, p))
    Xty = jnp.zeros(p)
    yty = jnp.zeros(())
    n = jnp.zeros(())
    for b in buckets:
        yc = (b.y - b.X @ beta0) * b.mask
        ZtZ = ZtZ.at[b.group].add(jnp.einsum("gni,gnj->gij", b.Z, b.Z))
        ZtX = ZtX.at[b.group].add(jnp.einsum("gni,gnj->gij", b.Z, b.X))
        Zty = Zty.at[b.group].add(jnp.einsum("gni,gn->gi", b.Z, yc))
        XtX = XtX + jnp.einsum("gni,gnj->ij", b.X, b.X)
        Xty = Xty + jnp.einsum("gni,gn->i", b.X, yc)
        yty = yty + jnp.sum(yc * yc)
        n = n + jnp.sum(b.mask)
    return ZtZ, ZtX, Zty, XtX, Xty, yty, n


def relative_factor(theta: jax.Array, stats: Stats) -> jax.Array:
    """Λ(θ): the q × q relative covariance factor of the grouping factor, as its structure builds it."""
    return stats.structure.lam(theta)


class PLS(NamedTuple):
    """The penalised least-squares decomposition at θ (see the module docstring)."""

    lam: jax.Array
    L: jax.Array
    RZX: jax.Array
    cu: jax.Array
    RX: jax.Array
    cb: jax.Array
    r2: jax.Array
    logdet_L: jax.Array
    logdet_RX: jax.Array


def factor_block(lam: jax.Array, ZtZ: jax.Array, ZtX: jax.Array, Zty: jax.Array):
    """L_g, R_ZX,g and c_u,g of a block-diagonal factor: L_gL_gᵀ = ΛᵀZ_gᵀZ_gΛ + I."""
    lamT = lam.T
    L = linalg.cholesky(lamT @ ZtZ @ lam + jnp.eye(lam.shape[0]))
    RZX = linalg.solve_lower(L, lamT @ ZtX)
    cu = linalg.solve_lower(L, lamT @ Zty[..., None])[..., 0]
    return L, RZX, cu


def fixed_block(XtX: jax.Array, Xty: jax.Array, yty: jax.Array, RZX_RZX: jax.Array, RZX_cu: jax.Array,
                cu_cu: jax.Array):
    """R_X, c_β and r² once the random-effect rows are eliminated (their RZXᵀRZX, RZXᵀc_u, |c_u|²).
    `linalg`'s factorisation, not LAPACK's: batched LAPACK calls can deadlock inside a batch's loop."""
    RX = linalg.cholesky(XtX - RZX_RZX)
    cb = linalg.solve_lower(RX, (Xty - RZX_cu)[:, None])[:, 0]
    return RX, cb, yty - cu_cu - jnp.sum(cb * cb)


def decompose(theta: jax.Array, stats: Stats) -> PLS:
    """Blockwise Cholesky factorisation of the mixed-model equations at θ."""
    lam = relative_factor(theta, stats)
    L, RZX, cu = factor_block(lam, stats.ZtZ, stats.ZtX, stats.Zty)
    RX, cb, r2 = fixed_block(stats.XtX, stats.Xty, stats.yty, jnp.einsum("gqi,gqj->ij", RZX, RZX),
                             jnp.einsum("gqi,gq->i", RZX, cu), jnp.sum(cu * cu))
    return PLS(lam, L, RZX, cu, RX, cb, r2, 2.0 * jnp.sum(linalg.log_diag_sum(L)), 2.0 * linalg.log_diag_sum(RX))


def criterion(pls: PLS, n: jax.Array, p: int, reml: jax.Array) -> jax.Array:
    """REML criterion (reml = 1) or ML deviance (reml = 0) from a decomposition."""
    dof = n - reml * p
    return pls.logdet_L + reml * pls.logdet_RX + dof * (1.0 + jnp.log(2.0 * jnp.pi * pls.r2 / dof))


def objective(theta: jax.Array, stats: Stats, reml: jax.Array) -> jax.Array:
    """The profiled criterion as a function of θ: what the optimiser minimises."""
    return criterion(decompose(theta, stats), stats.n, stats.p, reml)


class Estimates(NamedTuple):
    """Everything else at θ̂: β (centred), σ, cov(β), conditional modes b and their covariances."""

    beta: jax.Array
    sigma: jax.Array
    vcov_beta: jax.Array
    b: jax.Array
    b_cov: jax.Array
    objective: jax.Array


def estimates(theta: jax.Array, stats: Stats, reml: jax.Array) -> Estimates:
    """β̂ (relative to β₀), σ̂, vcov(β̂), conditional modes b̂_g = Λû_g and cov(b_g | y) = σ²Λ(L_gL_gᵀ)⁻¹Λᵀ."""
    pls = decompose(theta, stats)
    p = stats.p
    beta = linalg.solve_upper_t(pls.RX, pls.cb[:, None])[:, 0]
    sigma2 = pls.r2 / (stats.n - reml * p)
    RXinv = linalg.solve_lower(pls.RX, jnp.eye(p))
    vcov = sigma2 * RXinv.T @ RXinv
    u = linalg.solve_upper_t(pls.L, (pls.cu - jnp.einsum("gqi,i->gq", pls.RZX, beta))[..., None])[..., 0]
    b = u @ pls.lam.T
    Linv = linalg.solve_lower(pls.L, jnp.broadcast_to(jnp.eye(stats.q), pls.L.shape))
    W = pls.lam @ linalg.mT(Linv)
    b_cov = sigma2 * W @ linalg.mT(W)
    return Estimates(beta, jnp.sqrt(sigma2), vcov, b, b_cov, criterion(pls, stats.n, p, reml))


def simulate_responses(key: jax.Array, mean: jax.Array, Z, group, lam, sigma: jax.Array, n_groups, nsim: int):
    """nsim draws of y = Xβ + Σ_k Z_k Λ_k u_k σ + σ ε with u, ε standard normal: (nsim, n).

    Z, group, lam and n_groups are per grouping factor: arrays for one factor, tuples for several.
    """
    if not isinstance(Z, tuple):
        Z, group, lam, n_groups = (Z,), (group,), (lam,), (n_groups,)
    keys = jax.random.split(key, len(Z) + 1)
    y = mean[None, :] + sigma * jax.random.normal(keys[0], (nsim, mean.shape[0]), dtype=mean.dtype)
    for k_u, Zk, gk, lk, nk in zip(keys[1:], Z, group, lam, n_groups):
        b = sigma * jax.random.normal(k_u, (nsim, nk, lk.shape[0]), dtype=mean.dtype) @ lk.T
        y = y + jnp.einsum("nq,snq->sn", Zk, b[:, gk, :])
    return y
