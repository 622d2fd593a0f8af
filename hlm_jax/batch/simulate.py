"""Simulating sufficient statistics of a fitted one-factor model (never y itself).

Per group, b_g = σΛz_g, and Uᵀε for the group's columns U = [Z X ...] is σF_g v_g with F_gF_gᵀ = UᵀU and
v_g standard normal; εᵀε is σ²(|v|² + χ²) with χ² on n − Σ rank(U_g) df. This is the exact joint
distribution of the statistics, at a cost independent of n.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from ..design import DesignError
from .devices import prng_key, to_device
from .targets import group_sums


@jax.tree_util.register_dataclass
@dataclass(frozen=True)
class Simulator:
    """Draws the y-dependent statistics of one or more target designs under a fitted model.

    Per group g the union of the columns involved, U_g = [Z_sim, Z_t, X_t, δ_t ...] (duplicates and
    zero columns dropped), has Gram Γ_g = F_gF_gᵀ (eigen-factor, rank mask `keep`). With y centred at
    target t's reference β_t, y_c = Z_sim b + ε + δ_t (δ_t = X_sim β_sim − X_t β_t, zero when nested).
    """

    lam: jax.Array        # (q_sim, q_sim) Λ of the simulating model
    sigma: jax.Array
    F: jax.Array          # (G, c, c)
    keep: jax.Array       # (G, c) 1.0 for directions with positive eigenvalue
    gram: jax.Array       # (G, c, c)
    chi2_df: jax.Array
    delta_sq: tuple       # per target: δ_tᵀδ_t
    z_sim: tuple = field(metadata=dict(static=True))
    targets: tuple = field(metadata=dict(static=True))   # per target (z_idx, x_idx, delta_idx or -1)

    def draw(self, key):
        """Standard normals z (G, q_sim), v (G, c) (masked to Γ's rank) and a χ² on `chi2_df` df for one
        replicate, from a single block of uniforms (one random-bits call keeps the compiled program small)."""
        G, c = self.keep.shape
        q = len(self.z_sim)
        n_normal = G * (q + c)
        n_pairs = -(-(n_normal + GAMMA_TRIES) // 2)
        u = jax.random.uniform(key, (2 * n_pairs + GAMMA_TRIES + 1,), dtype=self.F.dtype)
        normals = _box_muller(u[:n_pairs], u[n_pairs:2 * n_pairs])
        z = normals[:G * q].reshape(G, q)
        v = normals[G * q:n_normal].reshape(G, c) * self.keep
        chi2 = 2.0 * _gamma(0.5 * self.chi2_df, normals[n_normal:n_normal + GAMMA_TRIES],
                            u[2 * n_pairs:2 * n_pairs + GAMMA_TRIES], u[-1])
        return z, v, chi2

    def statistics(self, draws, t: int):
        """(Zᵀy_c (G, q_t), Xᵀy_c (p_t,), y_cᵀy_c) of target t for one replicate's draws."""
        z, v, chi2 = draws
        zi, xi, di = self.targets[t]
        zs = list(self.z_sim)
        b = self.sigma * jnp.sum(self.lam[None, :, :] * z[:, None, :], axis=-1)     # (G, q_sim)
        e = self.sigma * jnp.sum(self.F * v[:, None, :], axis=-1)                    # (G, c) = Uᵀε
        Gzs = self.gram[:, :, zs]                                                    # (G, c, q_sim)
        mean_part = jnp.sum(Gzs * b[:, None, :], axis=-1)                           # (G, c) = UᵀZ_sim b
        u = mean_part + e
        if di >= 0:
            u = u + self.gram[:, :, di]
        Zty = u[:, list(zi)]
        Xty = jnp.sum(u[:, list(xi)], axis=0)
        bZZb = jnp.sum(b * mean_part[:, zs])
        yty = bZZb + 2.0 * jnp.sum(b * e[:, zs]) + self.sigma ** 2 * (jnp.sum(v * v) + chi2)
        if di >= 0:
            yty = yty + 2.0 * jnp.sum(b * self.gram[:, zs, di]) + 2.0 * jnp.sum(e[:, di]) + self.delta_sq[t]
        return Zty, Xty, yty


GAMMA_TRIES = 16


def _box_muller(u1, u2):
    """Pairs of uniforms on [0, 1) → twice as many independent standard normals."""
    r = jnp.sqrt(-2.0 * jnp.log1p(-u1))
    angle = 2.0 * jnp.pi * u2
    return jnp.concatenate([r * jnp.cos(angle), r * jnp.sin(angle)])


def _gamma(shape, normals, uniforms, boost):
    """A Gamma(shape, 1) draw by Marsaglia and Tsang's squeeze-free method (shape < 1 boosted by
    U^(1/shape)), taking the first of GAMMA_TRIES proposals accepted; each is accepted with probability
    above 0.95, so all fail with probability below 1e-20. Shape 0 gives 0."""
    a = jnp.where(shape < 1.0, shape + 1.0, shape)
    d = a - 1.0 / 3.0
    c = 1.0 / jnp.sqrt(9.0 * d)
    v = (1.0 + c * normals) ** 3
    safe_v = jnp.where(v > 0, v, 1.0)
    accept = (v > 0) & (jnp.log1p(-uniforms) < 0.5 * normals ** 2 + d - d * safe_v + d * jnp.log(safe_v))
    draw = d * safe_v[jnp.argmax(accept)]
    draw = jnp.where(shape < 1.0, draw * (1.0 - boost) ** (1.0 / jnp.where(shape > 0, shape, 1.0)), draw)
    return jnp.where(shape > 0, draw, 0.0)


@dataclass
class SimulationSource:
    """What `Simulator` was built from (numpy), to rebuild replicate responses on request."""

    simulator: Simulator
    U: np.ndarray
    codes: np.ndarray
    mean: np.ndarray
    Z_sim: np.ndarray
    row_index: pd.Index
    eig_w: np.ndarray
    eig_V: np.ndarray
    y_scale: float = 1.0

    def responses(self, seed: int, which: np.ndarray) -> np.ndarray:
        """Replicates `which` as responses in the data's units (simulated in units `y_scale` times smaller)."""
        sim = self.simulator
        with jax.enable_x64(True):
            keys = jax.vmap(jax.random.fold_in, (None, 0))(prng_key(seed), to_device(which))
            z, v, chi2 = jax.tree_util.tree_map(np.asarray, jax.vmap(sim.draw)(keys))
        lam, sigma, keep = np.asarray(sim.lam), float(sim.sigma), np.asarray(sim.keep)
        G, c = keep.shape
        n = len(self.codes)
        # orthonormal basis per group of col(U_g): u_k = U_g V_k / sqrt(λ_k)
        basis = np.zeros((n, c))
        for g in range(G):
            rows = np.flatnonzero(self.codes == g)
            w, V = self.eig_w[g], self.eig_V[g]
            ok = keep[g] > 0
            basis[np.ix_(rows, np.flatnonzero(ok))] = self.U[rows] @ V[:, ok] / np.sqrt(w[ok])
        out = np.empty((len(which), n))
        for r, i in enumerate(which):
            b = sigma * z[r] @ lam.T
            eps_in = sigma * np.einsum("nk,nk->n", basis, v[r][self.codes])
            h = np.random.default_rng([int(seed), int(i)]).standard_normal(n)
            for g in range(G):
                rows = np.flatnonzero(self.codes == g)
                Bg = basis[rows]
                h[rows] -= Bg @ (Bg.T @ h[rows])
            norm = np.sqrt(h @ h)
            eps_out = sigma * np.sqrt(chi2[r]) * h / norm if norm > 0 else 0.0 * h
            out[r] = self.mean + np.einsum("nq,nq->n", self.Z_sim, b[self.codes]) + eps_in + eps_out
        return out * self.y_scale


def _unique_columns(cols: list[np.ndarray]) -> tuple[np.ndarray, list[int]]:
    """Stack columns, dropping exact duplicates and all-zero columns (index −1 for those)."""
    kept, index = [], []
    for col in cols:
        if not np.any(col):
            index.append(-1)
            continue
        for k, other in enumerate(kept):
            if np.array_equal(col, other):
                index.append(k)
                break
        else:
            kept.append(col)
            index.append(len(kept) - 1)
    return np.column_stack(kept), index


def make_simulator(sim_X_beta, Z_sim, lam, sigma, codes, G, targets, row_index, y_scale: float = 1.0):
    """A `Simulator` for y = X_simβ_sim + Z_sim b + ε and targets [(X_t, Z_t, β_t)]; returns it with its source
    (whose responses are y · `y_scale`: the data's units when the model is given in scaled ones)."""
    cols = [Z_sim[:, j] for j in range(Z_sim.shape[1])]
    layout, deltas = [], []
    for X, Z, beta in targets:
        delta = sim_X_beta - X @ beta
        if np.max(np.abs(delta)) <= 1e-10 * max(np.max(np.abs(sim_X_beta)), 1.0):
            delta = np.zeros_like(delta)
        deltas.append(delta)
        start = len(cols)
        cols += [Z[:, j] for j in range(Z.shape[1])] + [X[:, j] for j in range(X.shape[1])] + [delta]
        layout.append((start, Z.shape[1], X.shape[1]))
    U, index = _unique_columns(cols)
    q_sim = Z_sim.shape[1]
    z_sim = tuple(index[:q_sim])
    if min(z_sim) < 0:
        raise DesignError("a random-effect column of the simulating model is zero everywhere")
    spec = []
    for (start, q, p), delta in zip(layout, deltas):
        zi = tuple(index[start:start + q])
        xi = tuple(index[start + q:start + q + p])
        if min(zi + xi) < 0:
            raise DesignError("a model column is zero everywhere")
        spec.append((zi, xi, index[start + q + p]))
    c = U.shape[1]
    gram = group_sums(codes, G, U, U)
    w, V = np.linalg.eigh(gram)
    tol = 1e-10 * np.maximum(w[:, -1:], 1e-300)
    keep = (w > tol).astype(float)
    F = V * np.sqrt(np.maximum(w, 0.0))[:, None, :] * keep[:, None, :]
    df = len(codes) - keep.sum()
    if df < 0:
        raise DesignError("the model has more parameters per group than rows")
    simulator = Simulator(to_device(lam, float), to_device(sigma, float), to_device(F), to_device(keep),
                          to_device(gram), to_device(df, float), tuple(to_device(d @ d, float) for d in deltas), z_sim,
                          tuple(spec))
    source = SimulationSource(simulator, U, codes, sim_X_beta, Z_sim, row_index, w, V, y_scale)
    return simulator, source, c
