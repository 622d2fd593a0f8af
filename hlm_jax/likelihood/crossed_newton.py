"""Newton on the crossed criterion: a start from moment estimates and the exact Hessian by trace identities.

Eliminating the first factor leaves the reduced augmented matrix Ω(θ) = Δᵀ(H − S)Δ + J
(`crossed.augmented`; M = Q₂ + p + 1, H = [Z₂ X y]ᵀ[Z₂ X y], S = Σ_g h_gW_gh_gᵀ, Δ = diag(Λ₂, I)).
With Ω = LLᵀ and ℓ_m = log|Ω_m| over its leading blocks (m = Q₂, Q₂ + p, M):

    f = log|L₁|² + Σ_r κ_r log L_rr² + dof(1 + log(2π/dof)) = log|L₁|² + Σ_m c_m ℓ_m + const,
    κ = (1 on Q₂, reml on p, dof on the last),  c = (1 − reml, reml − dof, dof),

so with X_i = ∂Ω/∂θ_i, V_m = Ω_m⁻¹ (zero-padded) and Ḡ = Σ_m c_m V_m = L⁻ᵀ diag(κ) L⁻¹:

    ∂_i f = ∂_i(log|L₁|² + ⟨Ḡ, Ω⟩),   ∂²_ij f = ∂²_ij(log|L₁|² + ⟨Ḡ, Ω⟩)|Ḡ fixed − Σ_m c_m tr(V_mX_iV_mX_j).

V_m = V − R_mᵀR_m for R_m the rows m.. of L⁻¹ (V = Ω⁻¹), so V_mX = VX − R_mᵀ(R_mX): a direction costs
one M × M product G = VX, and tr(V_mX_iV_mX_j) = tr(G_iG_j). When every factor is one scalar term
(λ_k = c_kθ_k) and a dense factor's λ_k > 0, its direction needs no product: Ω − J = ΔĤΔ gives
X_k = (E_kΩ + ΩE_k − 2E_k)/λ_k (E_k: its columns), and

    λ_iλ_j tr(V X_i V X_j) = 2δ_ij(n_i − 4d_i) + 2C_ij + 4B_ij,   λ_j tr(V X₁ V X_j) = 2 Σ_{a∈j} (G − GV)_aa,

d_i = Σ_{a∈i} V_aa, C_ij = Σ_{a∈i,b∈j} V_abΩ_ab, B_ij = Σ_{a∈i,b∈j} V_ab² (V = V_m, G = V_mX₁): O(M²) given V.
⟨Ḡ, Ω⟩ is then a polynomial in the dense λ over block sums of Ḡ∘(H − S), with S, ∂S and ∂²S in λ₁ from
one scatter of the pairs. A Newton step costs one Cholesky factorisation, one inverse and one product.

Memory of a step, on top of the statistics (`crossed`): 8 bytes × (about 16 M² for H, S, ∂S, ∂²S, Ω, its
factor, V, Ḡ, X₁, G and the elementwise products + 6 P for the pairs' three channels and their gathered
weights). InstEval (M = 1,145, P = 1.8·10⁶): about 170 MB + 90 MB; `benchmarks/bench_insteval.py` prints
the measured peak of the whole process.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.linalg import cho_solve, solve_triangular

from . import crossed
from .crossed import CrossedStats

SMALL_LAMBDA = 1e-2  # below it a dense factor's direction takes the M × M product (no division by λ_k)


def moment_start(stats: CrossedStats, start: np.ndarray) -> np.ndarray:
    """A start near θ̂ from moment estimates when every factor has one scalar term (else `start`).

    Henderson's method 1 on the statistics. With e = My the OLS residuals (M = I − X(XᵀX)⁻¹Xᵀ),
    D_k = diag(Z_kᵀZ_k) and the level totals' sums of squares q_k = eᵀZ_kD_k⁻¹Z_kᵀe:
    E q_k = Σ_j σ_j² |D_k^(-1/2) Z_kᵀMZ_j|² + σ² tr(D_k⁻¹Z_kᵀMZ_k) and E|e|² = Σ_j σ_j² tr(Z_jᵀMZ_j) + σ²(n − p),
    solved for the σ²s; then θ_k = σ_k/σ (at least 1% of σ). InstEval's start is within 25% of θ̂."""
    scalar = _scalar_terms(stats)
    if scalar is None:
        return start
    factors = _moment_factors(stats)
    XtX_inv = np.linalg.inv(np.asarray(stats.first.XtX))
    K = len(factors)
    A, b = np.zeros((K + 1, K + 1)), np.zeros(K + 1)
    for k, (Dk, Uk, ek, cross) in enumerate(factors):
        inv = _safe_inverse(Dk)
        U = Uk * np.sqrt(inv)[:, None]
        b[k] = np.sum(ek ** 2 * inv)
        A[k, K] = np.sum(Dk > 0) - np.sum((U.T @ U) * XtX_inv)
        for j, (_, Uj, *_) in enumerate(factors):
            rows, cols, vals = cross[j]
            a = vals * np.sqrt(inv[rows])
            W = XtX_inv @ Uj.T
            A[k, j] = np.sum(a ** 2) - 2.0 * np.sum(a * np.einsum("ep,pe->e", U[rows], W[:, cols])) \
                + np.sum((U.T @ U) * (W @ W.T))
        A[K, k] = Dk.sum() - np.sum((Uk.T @ Uk) * XtX_inv)
    A[K, K], b[K] = float(stats.first.n) - stats.first.p, float(stats.first.yty)
    variances = np.linalg.lstsq(A, b, rcond=None)[0]
    if not np.all(np.isfinite(variances)):
        return start
    sigma2 = max(variances[K], 1e-3 * b[K] / A[K, K])
    theta = np.array(start, dtype=float)
    index, coefficient = scalar
    theta[list(index)] = np.sqrt(np.maximum(variances[:K] / sigma2, 1e-4)) / np.asarray(coefficient)
    return theta


def _moment_factors(stats: CrossedStats) -> list:
    """Per factor (scalar terms): diag(Z_kᵀZ_k), Z_kᵀX, Z_kᵀe and, per factor j, Z_kᵀZ_j as (rows, cols, values)."""
    n1 = np.asarray(stats.first.ZtZ).reshape(-1)
    Z2 = np.asarray(stats.Z2tZ2)
    row, group, val = np.asarray(stats.cross_row), np.asarray(stats.cross_group), np.asarray(stats.cross_val)[:, 0]
    spans = [(offset, offset + levels) for offset, levels, *_ in stats.blocks]
    first_cross = [(np.arange(n1.size), np.arange(n1.size), n1)]
    for lo, hi in spans:
        e = (row >= lo) & (row < hi)
        first_cross.append((group[e], row[e] - lo, val[e]))
    out = [(n1, np.asarray(stats.first.ZtX)[:, 0, :], np.asarray(stats.first.Zty)[:, 0], first_cross)]
    for lo, hi in spans:
        e = (row >= lo) & (row < hi)
        cross = [(row[e] - lo, group[e], val[e])]
        for lo2, hi2 in spans:
            r, c = np.nonzero(Z2[lo:hi, lo2:hi2])
            cross.append((r, c, Z2[lo:hi, lo2:hi2][r, c]))
        out.append((np.diag(Z2)[lo:hi], np.asarray(stats.Z2tX)[lo:hi], np.asarray(stats.Z2ty)[lo:hi], cross))
    return out


def _safe_inverse(v: np.ndarray) -> np.ndarray:
    """1/v where v > 0, else 0 (a level with no weight adds nothing)."""
    return np.where(v > 0, 1.0 / np.where(v > 0, v, 1.0), 0.0)


def _scalar_terms(stats: CrossedStats) -> tuple[tuple[int, ...], tuple[float, ...]] | None:
    """(θ index, c) per factor (first, then the dense ones) when every Λ_k is the 1 × 1 matrix c·θ_index."""
    out = []
    for structure in [stats.first.structure] + [s for *_, s in stats.blocks]:
        entries = structure.single_entries()
        if structure.q != 1 or entries is None or len(entries) != 1:
            return None
        index = entries[0][2]
        unit = np.zeros(index + 1)
        unit[index] = 1.0
        out.append((index, float(np.asarray(structure.lam(unit))[0, 0])))
    return tuple(i for i, _ in out), tuple(c for _, c in out)


def _dense_block_of_column(stats: CrossedStats) -> np.ndarray:
    """Which dense factor (0, 1, ...) each of the Q₂ columns belongs to."""
    return np.concatenate([np.full(levels * q, k) for k, (_, levels, q, *_) in enumerate(stats.blocks)])


def _nested(stats: CrossedStats, reml: jax.Array) -> tuple[jax.Array, tuple]:
    """κ (M,) and the leading blocks' (m, c_m) of the module docstring."""
    p, Q2 = stats.first.p, stats.Q2
    dof = stats.first.n - reml * p
    kappa = jnp.concatenate([jnp.ones(Q2), jnp.full(p, reml), dof[None]])
    return kappa, ((Q2, 1.0 - reml), (Q2 + p, reml - dof), (Q2 + p + 1, dof))


def _inverse_parts(omega: jax.Array, stats: CrossedStats, reml: jax.Array):
    """V = Ω⁻¹, the rows Q₂.. of L⁻¹ (R, (p + 1) × M), Ḡ and the leading blocks (m, c_m)."""
    M, Q2 = omega.shape[0], stats.Q2
    L = jnp.linalg.cholesky(omega)
    V = cho_solve((L, True), jnp.eye(M, dtype=omega.dtype))
    R = solve_triangular(L, jnp.eye(M, dtype=omega.dtype)[:, Q2:], lower=True, trans=1).T
    kappa, nested = _nested(stats, reml)
    Gbar = V + R.T @ ((kappa[Q2:] - 1.0)[:, None] * R)
    return V, R, Gbar, nested


def _restricted(V: jax.Array, G: jax.Array, X: jax.Array, R: jax.Array, m: int, Q2: int):
    """V_m and V_mX for directions X (k, M, M) from V, G = VX and R (rows Q₂.. of L⁻¹)."""
    Rm = R[m - Q2:]
    return V - Rm.T @ Rm, G - jnp.einsum("ra,krc->kac", Rm, jnp.einsum("rb,kbc->krc", Rm, X))


def _product_traces(V, R, X, nested, Q2: int) -> jax.Array:
    """Σ_m c_m tr(V_mX_iV_mX_j) (k × k) for directions X (k, M, M), one M × M product each."""
    G = jnp.einsum("ab,kbc->kac", V, X)
    total = 0.0
    for m, c in nested:
        _, Gm = _restricted(V, G, X, R, m, Q2)
        total = total + c * jnp.einsum("iab,jba->ij", Gm, Gm)
    return total


def newton_derivatives(fun, theta: jax.Array, args) -> tuple[jax.Array, jax.Array]:
    """Exact (∇f, ∇²f) of `crossed.objective` (fun) at θ, args = (stats, reml), by the module's identities
    (`optimize.minimize`'s `derivs`): the scalar-term form when every factor is one scalar term."""
    stats, reml = args
    if _scalar_terms(stats) is not None:
        return _scalar_derivatives(theta, stats, reml)
    omega, tangent = jax.linearize(lambda t: crossed.augmented(t, stats)[1], theta)
    X = jax.vmap(tangent)(jnp.eye(theta.size, dtype=theta.dtype))
    V, R, Gbar, nested = _inverse_parts(omega, stats, reml)
    Gbar = jax.lax.stop_gradient(Gbar)

    def phi(t):
        logdet1, om = crossed.augmented(t, stats)
        return logdet1 + jnp.sum(Gbar * om)

    g, hvp = jax.linearize(jax.grad(phi), theta)
    H = jax.vmap(hvp)(jnp.eye(theta.size, dtype=theta.dtype)) - _product_traces(V, R, X, nested, stats.Q2)
    return g, 0.5 * (H + H.T)


def _scalar_derivatives(theta: jax.Array, stats: CrossedStats, reml: jax.Array) -> tuple[jax.Array, jax.Array]:
    """`newton_derivatives` when every factor is one scalar term, in λ = (λ₁, dense λ_k) then mapped to θ."""
    index, coefficient = (np.asarray(v) for v in _scalar_terms(stats))
    lam = theta[index] * coefficient
    Q2, M = stats.Q2, stats.Q2 + stats.first.p + 1
    n1 = stats.first.ZtZ[:, 0, 0]
    den = 1.0 + lam[0] ** 2 * n1
    W = jnp.stack([lam[0] ** 2 / den, 2.0 * lam[0] / den ** 2, (2.0 - 6.0 * lam[0] ** 2 * n1) / den ** 3])
    S = jax.vmap(crossed.schur_matrix, in_axes=(0, None))(W[:, :, None, None], stats)
    blocks = np.zeros((M, len(stats.blocks) + 1))
    blocks[np.arange(M), np.concatenate([_dense_block_of_column(stats), np.full(M - Q2, len(stats.blocks))])] = 1.0
    delta = jnp.asarray(blocks) @ jnp.concatenate([lam[1:], jnp.ones(1)])
    Hhat = crossed.gram(stats) - S[0]
    omega = delta[:, None] * Hhat * delta[None, :] + jnp.diag(jnp.asarray(blocks[:, -1] == 0, float))
    X1 = -delta[:, None] * S[1] * delta[None, :]
    V, R, Gbar, nested = _inverse_parts(omega, stats, reml)

    def block_sums(Y):
        return jnp.asarray(blocks).T @ Y @ jnp.asarray(blocks)

    d = jnp.concatenate([lam[1:], jnp.ones(1)])
    T0, T1, T2 = block_sums(Gbar * Hhat), block_sums(Gbar * S[1]), block_sums(Gbar * S[2])
    logdet_d1 = jnp.sum(2.0 * lam[0] * n1 / den)
    logdet_d2 = jnp.sum(2.0 * n1 * (1.0 - lam[0] ** 2 * n1) / den ** 2)
    g = jnp.concatenate([(logdet_d1 - d @ T1 @ d)[None], 2.0 * (T0 @ d)[:-1]])
    H = jnp.block([[(logdet_d2 - d @ T2 @ d)[None, None], -2.0 * (T1 @ d)[None, :-1]],
                   [-2.0 * (T1 @ d)[:-1, None], 2.0 * T0[:-1, :-1]]])
    dense = jnp.asarray(blocks[:, :-1])
    H = H - jax.lax.cond(jnp.min(lam[1:]) > SMALL_LAMBDA,
                         lambda: _dense_traces(V, R, X1, omega, lam, dense, nested, Q2),
                         lambda: _explicit_traces(Hhat, delta, dense, V, R, X1, nested, Q2))
    g_theta = jnp.zeros_like(theta).at[index].set(g * coefficient)
    H_theta = jnp.zeros((theta.size, theta.size), theta.dtype).at[np.ix_(index, index)].set(
        H * np.outer(coefficient, coefficient))
    return g_theta, 0.5 * (H_theta + H_theta.T)


def _dense_traces(V, R, X1, omega, lam, dense, nested, Q2: int) -> jax.Array:
    """Σ_m c_m tr(V_mX_iV_mX_j) in λ with the dense directions by the identities (all dense λ_k > 0)."""
    G = V @ X1
    counts = jnp.sum(dense, axis=0)
    total = 0.0
    for m, c in nested:
        Vm, Gm = _restricted(V, G[None], X1[None], R, m, Q2)
        Gm = Gm[0]
        d = dense.T @ jnp.diagonal(Vm)
        dd = (2.0 * jnp.diag(counts - 4.0 * d) + 2.0 * dense.T @ (Vm * omega) @ dense
              + 4.0 * dense.T @ (Vm * Vm) @ dense) / jnp.outer(lam[1:], lam[1:])
        cross = 2.0 * dense.T @ (jnp.diagonal(Gm) - jnp.sum(Gm * Vm, axis=1)) / lam[1:]
        first = jnp.sum(Gm * Gm.T)
        total = total + c * jnp.block([[first[None, None], cross[None]], [cross[:, None], dd]])
    return total


def _explicit_traces(Hhat, delta, dense, V, R, X1, nested, Q2: int) -> jax.Array:
    """As `_dense_traces` with every dense direction X_k = E_kĤΔ + ΔĤE_k formed (one product each)."""
    HD = Hhat * delta[None, :]
    Xk = jnp.einsum("ak,ab->kab", dense, HD)
    X = jnp.concatenate([X1[None], Xk + jnp.swapaxes(Xk, 1, 2)])
    return _product_traces(V, R, X, nested, Q2)
