"""The profiled criterion for wide fixed effects: X enters through sparse cross-products with Z₁.

With thousands of indicator columns in X (InstEval's `service + dept + d + service:d`, p = 1,790),
the dense per-level Z₁ᵀX of `lmm`/`crossed` makes Σ_g R_ZX,gᵀR_ZX,g cost G·q₁·p² per evaluation
(2972 · 1790² ≈ 10¹⁰). Here the fixed effects are eliminated together with the other factors.
Take the reduced system's rows u₂ (the other factors' Q₂ columns), β (p) and y (1), k = Q₂ + p + 1,
C = [Z₂ X y]ᵀ[Z₂ X y] (k × k, constant) and K_g = [Z₂ X y]ᵀZ₁,g (k × q₁ per level g of the first
factor; sparse: a level touches few columns of X). Eliminating u₁ level by level leaves

    M(θ) = Λ̃ᵀ (C − Σ_g K_g W_g K_gᵀ) Λ̃ + diag(I_Q₂, 0),  W_g = Λ₁(L_gL_gᵀ)⁻¹Λ₁ᵀ,  Λ̃ = diag(Λ₂, I_p, 1).

With M = [[M_t, m], [mᵀ, m_yy]] (t: the u₂ and β rows), log|L₂₂|² + log|R_X|² = log|M_t| and the
penalised residual sum of squares is r² = m_yy − mᵀM_t⁻¹m, so

    REML = log|L₁|² + log|M_t| + (n − p)(1 + log(2πr²/(n − p))),
    ML   = log|L₁|² + log|M_uu| + n(1 + log(2πr²/n))          (M_uu: the u₂ block),

the same numbers as `lmm.criterion`. Σ_g K_g W_g K_gᵀ is a sum over the P pairs of nonzero entries
of K that share a level (InstEval's students: P ≈ 3.3·10⁶, against 10¹⁰ for the dense product), and
log|M_t| and mᵀM_t⁻¹m come through
`crossed.logdet_and_quadratic_form`. One evaluation: O(P q₁² + k³/3). The optimiser's exact gradient and
Hessian come from trace identities (`gradient_and_hessian`), not from autodiff through the k × k factor.
Memory: 8 bytes × (about 23k² for XLA's k × k buffers + 8P for the pairs on the host and in the program);
for me_instr_eval1 (k = 1,796, P ≈ 3.5·10⁶) about 800 MB over the data (README, "Wide fixed effects").
"""
from __future__ import annotations

from dataclasses import dataclass, field

import jax
import jax.numpy as jnp

from jax.scipy.linalg import cho_solve

from . import linalg
from .crossed import apply_lambda2_t, block_factors, logdet_and_quadratic_form
from .lmm import Estimates, Stats, relative_factor

@jax.tree_util.register_dataclass
@dataclass(frozen=True)
class WideStats:
    """`first` (the first factor's ZᵀZ per level and Λ₁'s structure), C (k, k), the nonzero entries of K
    (entry e: row entry_row (E,) of the reduced system, level entry_group (E,), v_e = entry_val (E, q₁)), and per pair e ≤ e' of
    nonzero entries of K sharing a level: rows pair_row_a ≤ pair_row_b (P,), level pair_group (P,) and
    v_e v_e'ᵀ (P, q₁, q₁); the first `n_border` pairs are those with pair_row_a < Q₂ (they touch the
    other factors' rows). `blocks` are the other factors' (offset, levels, q, structure), as `crossed`."""

    first: Stats
    C: jax.Array
    entry_row: jax.Array
    entry_group: jax.Array
    entry_val: jax.Array
    pair_row_a: jax.Array
    pair_row_b: jax.Array
    pair_group: jax.Array
    pair_val: jax.Array
    n: jax.Array
    p: int = field(metadata=dict(static=True))
    Q2: int = field(metadata=dict(static=True))
    blocks: tuple = field(metadata=dict(static=True))
    n_border: int = field(default=0, metadata=dict(static=True))


def _weights(theta: jax.Array, first: Stats) -> tuple[jax.Array, jax.Array]:
    """log|L₁|² and W_g = Λ₁(L_gL_gᵀ)⁻¹Λ₁ᵀ per level of the first factor."""
    lam1 = relative_factor(theta, first)
    L1 = linalg.cholesky(lam1.T @ first.ZtZ @ lam1 + jnp.eye(lam1.shape[0]))
    T = linalg.solve_lower(L1, jnp.broadcast_to(lam1.T, L1.shape))  # L_g⁻¹Λ₁ᵀ
    return 2.0 * jnp.sum(linalg.log_diag_sum(L1)), linalg.mT(T) @ T


def _pair_sum(W: jax.Array, stats: WideStats) -> jax.Array:
    """Σ_g K_g W_g K_gᵀ (k × k) from the pairs: ⟨W_g, v_e v_e'ᵀ⟩ at (r_e, r_e'), mirrored."""
    values = jnp.einsum("pij,pij->p", W[stats.pair_group], stats.pair_val)
    k = stats.C.shape[0]
    S = jnp.zeros((k, k), W.dtype).at[stats.pair_row_a, stats.pair_row_b].add(values)
    return S + S.T - jnp.diag(jnp.diagonal(S))


def _border_sum(W: jax.Array, stats: WideStats) -> jax.Array:
    """The first Q₂ rows of `_pair_sum` (Q₂ × k), from the border pairs alone."""
    Q2, nb = stats.Q2, stats.n_border
    values = jnp.einsum("pij,pij->p", W[stats.pair_group[:nb]], stats.pair_val[:nb])
    S = jnp.zeros((Q2, stats.C.shape[0]), W.dtype).at[stats.pair_row_a[:nb], stats.pair_row_b[:nb]].add(values)
    U = S[:, :Q2]
    return S.at[:, :Q2].set(U + U.T - jnp.diag(jnp.diagonal(U)))


def _bulk_gather(B: jax.Array, stats: WideStats) -> jax.Array:
    """The adjoint of `_pair_sum` on the pairs past the border, for symmetric B (k × k): per level,
    Σ_e (2 − δ_{r_e r_e'}) B[r_e, r_e'] v_e v_e'ᵀ, so that ⟨B, Σ_g K_g W_g K_gᵀ⟩ = Σ_g ⟨h_g, W_g⟩ there."""
    nb = stats.n_border
    a, b = stats.pair_row_a[nb:], stats.pair_row_b[nb:]
    coef = jnp.where(a == b, 1.0, 2.0) * B[a, b]
    return jnp.zeros(stats.first.ZtZ.shape, B.dtype).at[stats.pair_group[nb:]].add(
        coef[:, None, None] * stats.pair_val[nb:])


def _sandwich(A: jax.Array, theta: jax.Array, stats: WideStats) -> jax.Array:
    """M = Λ̃ᵀAΛ̃ + diag(I_Q₂, 0) for A (k × k): Λ̃ = diag(Λ₂, I) changes only the first Q₂ rows and columns."""
    if not stats.Q2:
        return A
    lams = block_factors(theta, stats)
    Q2 = stats.Q2
    M = jnp.concatenate([apply_lambda2_t(A[:Q2], lams, stats), A[Q2:]], axis=0)
    M = jnp.concatenate([apply_lambda2_t(M[:, :Q2].T, lams, stats).T, M[:, Q2:]], axis=1)
    return M.at[jnp.arange(Q2), jnp.arange(Q2)].add(1.0)


def _border_rows(theta: jax.Array, stats: WideStats) -> jax.Array:
    """The first Q₂ rows of M(θ) (Q₂ × k), from the border pairs alone (cheap to differentiate)."""
    _, W = _weights(theta, stats.first)
    Q2 = stats.Q2
    lams = block_factors(theta, stats)
    R = apply_lambda2_t(stats.C[:Q2] - _border_sum(W, stats), lams, stats)
    R = jnp.concatenate([apply_lambda2_t(R[:, :Q2].T, lams, stats).T, R[:, Q2:]], axis=1)
    return R + jnp.eye(Q2, R.shape[1], dtype=R.dtype)


def reduced_system(theta: jax.Array, stats: WideStats):
    """log|L₁|² and M(θ) (see the module docstring)."""
    logdet_L1, W = _weights(theta, stats.first)
    return logdet_L1, _sandwich(stats.C - _pair_sum(W, stats), theta, stats)


def objective(theta: jax.Array, stats: WideStats, reml: jax.Array) -> jax.Array:
    """The profiled REML criterion (reml = 1) or ML deviance (reml = 0) as a function of θ."""
    logdet_L1, M = reduced_system(theta, stats)
    logdet_t, quad = logdet_and_quadratic_form(M[:-1, :-1], M[:-1, -1:])
    r2 = M[-1, -1] - quad[0, 0]
    if stats.Q2:
        logdet_u = 2.0 * linalg.log_diag_sum(jnp.linalg.cholesky(M[:stats.Q2, :stats.Q2]))
    else:
        logdet_u = jnp.zeros(())
    dof = stats.n - reml * stats.p
    return logdet_L1 + logdet_u + reml * (logdet_t - logdet_u) + dof * (1.0 + jnp.log(2.0 * jnp.pi * r2 / dof))


def _first_indices(stats: WideStats) -> tuple[int, ...]:
    """The θ indices that Λ₁ uses (only these change W, hence the bulk of M)."""
    return tuple(sorted({i for _, index, _ in stats.first.structure.parts for i in index}))


def _inverse(L: jax.Array) -> jax.Array:
    """(LLᵀ)⁻¹ from a lower Cholesky factor L (two triangular solves), symmetrised."""
    N = cho_solve((L, True), jnp.eye(L.shape[0], dtype=L.dtype))
    return 0.5 * (N + N.T)


def _tangents(theta: jax.Array, A: jax.Array, stats: WideStats) -> jax.Array:
    """dM/dθ_i (n_θ, k, k): through W (a pass over all pairs) only for the first factor's θ, through Λ₂
    (the first Q₂ rows and columns) for all."""
    first = _first_indices(stats)
    out = []
    for i in range(theta.size):
        e = jnp.zeros_like(theta).at[i].set(1.0)
        if i in first:
            dW = jax.jvp(lambda t: _weights(t, stats.first)[1], (theta,), (e,))[1]
            dM = jax.jvp(lambda t, a: _sandwich(a, t, stats), (theta, A), (e, -_pair_sum(dW, stats)))[1]
        else:
            dM = jax.jvp(lambda t: _sandwich(A, t, stats), (theta,), (e,))[1]
        out.append(dM)
    return jnp.stack(out)


def _curvature(N: jax.Array, dM: jax.Array, first: tuple[int, ...], Q2: int) -> jax.Array:
    """tr(N dM_i N dM_j) (n_θ × n_θ). A tangent of a θ outside Λ₁ lives in the first Q₂ rows and columns,
    dM_j = J F_jᵀ + F_j Jᵀ (J = [I_Q₂; 0], F_j = dM_j[:, :Q₂] − ½J dM_j[:Q₂, :Q₂]), so its terms are
    2⟨N dM_i N J, F_j⟩ at O(k²Q₂); only pairs of Λ₁'s θ take a k × k product per θ."""
    n = dM.shape[0]
    T = jnp.zeros((n, n), N.dtype)
    if first:
        G = jnp.einsum("ab,ibc->iac", N, dM[jnp.asarray(first)])
        T = T.at[jnp.ix_(jnp.asarray(first), jnp.asarray(first))].set(jnp.einsum("iac,jca->ij", G, G))
    others = [j for j in range(n) if j not in first]
    if others:
        F = dM[:, :, :Q2].at[:, :Q2, :].multiply(0.5)
        X = jnp.einsum("ab,ibc,cd->iad", N, dM, N[:, :Q2])  # N dM_i N J
        cross = 2.0 * jnp.einsum("iad,jad->ij", X, F[jnp.asarray(others)])
        T = T.at[:, jnp.asarray(others)].set(cross)
        T = T.at[jnp.asarray(others), :].set(cross.T)
    return T


def gradient_and_hessian(fun, theta: jax.Array, args) -> tuple[jax.Array, jax.Array]:
    """Exact ∇f and ∇²f of `objective` by trace identities, without differentiating a k × k Cholesky factor.

    f = log|L₁|² + a log|M_t| + b log|M_uu| + dof·log r² + const (REML: a = 1, b = 0; ML: a = 0, b = 1),
    with d log|A| = tr(A⁻¹dA), d² log|A| = tr(A⁻¹d²A) − tr(A⁻¹dA A⁻¹dA), and for r² = min over (u₂, β)
    (envelope theorem, z = [−M_t⁻¹m; 1]): dr² = zᵀdM z, d²r² = zᵀd²M z − 2(dM z)_tᵀM_t⁻¹(dM z)_t.
    The first-order terms and those in d²M are the autodiff derivatives of the surrogate
    ψ(θ) = log|L₁|² + ⟨P, M(θ)⟩, P = a N_t + b N_u + (dof/r²) zzᵀ held fixed; its bulk (pairs past the
    border) is linear in W, ⟨h(P), W(θ)⟩ with h gathered once, so only border pairs are differentiated.
    The rest needs dM = ∂M/∂θ_i and one k × k product per θ of Λ₁ (`_curvature`). `fun` is unused (the
    signature of `optimize.minimize`'s `derivs`). Cost: 2 + n₁ passes over the pairs and about 2.3k³ + 2n₁k³ flops."""
    stats, reml = args
    logdet_L1, W = _weights(theta, stats.first)
    A = stats.C - _pair_sum(W, stats)
    M = _sandwich(A, theta, stats)
    k, Q2 = M.shape[0] - 1, stats.Q2
    L = jnp.linalg.cholesky(M[:k, :k])
    N = _inverse(L)
    z = jnp.concatenate([-(N @ M[:k, -1]), jnp.ones(1, M.dtype)])
    r2 = z @ M @ z
    dof = stats.n - reml * stats.p
    a, b = reml, 1.0 - reml
    P = jnp.zeros_like(M).at[:k, :k].set(a * N) + dof / r2 * jnp.outer(z, z)
    if Q2:
        Nu = _inverse(L[:Q2, :Q2])
        P = P.at[:Q2, :Q2].add(b * Nu)
    h = _bulk_gather(P, stats)

    def surrogate(t):
        logdet, Wt = _weights(t, stats.first)
        value = logdet - jnp.sum(h * Wt)
        if Q2:
            R = _border_rows(t, stats)
            value = value + 2.0 * jnp.sum(P[:Q2] * R) - jnp.sum(P[:Q2, :Q2] * R[:, :Q2])
        return value

    g, hvp = jax.linearize(jax.grad(surrogate), theta)
    H = jax.vmap(hvp)(jnp.eye(theta.size, dtype=theta.dtype))
    dM = _tangents(theta, A, stats)
    dMz = (dM @ z)[:, :k]
    dr2 = dMz @ z[:k] + (dM[:, -1, :] @ z)
    H = H - a * _curvature(N, dM[:, :k, :k], _first_indices(stats), Q2) \
        - 2.0 * dof / r2 * (dMz @ N @ dMz.T) - dof * jnp.outer(dr2, dr2) / r2 ** 2
    if Q2:
        H = H - b * jnp.einsum("ab,ibc,cd,jda->ij", Nu, dM[:, :Q2, :Q2], Nu, dM[:, :Q2, :Q2])
    return g, 0.5 * (H + H.T)


def _diagonal_blocks(N: jax.Array, offset: int, levels: int, q: int) -> jax.Array:
    """The q × q diagonal blocks of N for `levels` consecutive levels from `offset`: (levels, q, q)."""
    idx = offset + jnp.arange(levels)[:, None] * q + jnp.arange(q)[None, :]
    return N[idx[:, :, None], idx[:, None, :]]


def estimates(theta: jax.Array, stats: WideStats, reml: jax.Array) -> tuple[Estimates, jax.Array, tuple]:
    """At θ: β̂ (relative to β₀), σ̂, vcov(β̂) and the first factor's modes and covariances (`lmm.Estimates`),
    the other factors' modes b₂ = Λ₂u₂ (Q₂,) and per other factor cov(b | y) per level (as `crossed.estimates`).

    [u₂; β̂] = M_t⁻¹m, σ̂² = r²/dof, vcov(β̂) = σ̂²(M_t⁻¹)_ββ; b₁,g = W_g Z₁,gᵀ(y − Xβ̂ − Z₂b₂) from the entries
    of K; cov(b₁,g | y) = σ²(W_g + W_g Y_gᵀ M_uu⁻¹ Y_g W_g) with Y_g = Λ₂ᵀ(Z₂ᵀZ₁)_g (lme4's condVar: the
    random-effect block of (LLᵀ)⁻¹, β held fixed); cov(b₂ | y) = σ²Λ₂ M_uu⁻¹ Λ₂ᵀ per level."""
    _, W = _weights(theta, stats.first)
    _, M = reduced_system(theta, stats)
    k, Q2 = M.shape[0] - 1, stats.Q2
    L = jnp.linalg.cholesky(M[:k, :k])
    N = _inverse(L)
    x = N @ M[:k, -1]
    dof = stats.n - reml * stats.p
    sigma2 = (M[-1, -1] - M[:k, -1] @ x) / dof
    lams = block_factors(theta, stats) if Q2 else []
    b2 = apply_lambda2_t(x[:Q2, None], [lam.T for lam in lams], stats)[:, 0] if Q2 else x[:0]
    resid = jnp.concatenate([-b2, -x[Q2:], jnp.ones(1, x.dtype)])
    Ztr = jnp.zeros(W.shape[:2], W.dtype).at[stats.entry_group].add(stats.entry_val * resid[stats.entry_row][:, None])
    b1 = jnp.einsum("gij,gj->gi", W, Ztr)
    b1_cov = W
    b2_covs = ()
    if Q2:
        Nu = _inverse(L[:Q2, :Q2])
        border = stats.entry_row < Q2
        G, q1 = W.shape[:2]
        Z21 = jnp.zeros((Q2, G, q1), W.dtype).at[jnp.where(border, stats.entry_row, 0), stats.entry_group].add(
            jnp.where(border[:, None], stats.entry_val, 0.0))
        Y = apply_lambda2_t(Z21.reshape(Q2, -1), lams, stats).reshape(Q2, G, q1)
        YW = jnp.einsum("rgi,gij->rgj", Y, W)
        b1_cov = W + jnp.einsum("rgi,rs,sgj->gij", YW, Nu, YW)
        b2_covs = tuple(sigma2 * lam @ _diagonal_blocks(Nu, offset, levels, q) @ lam.T
                        for (offset, levels, q, *_), lam in zip(stats.blocks, lams))
    est = Estimates(x[Q2:], jnp.sqrt(sigma2), sigma2 * N[Q2:, Q2:], b1, sigma2 * b1_cov, objective(theta, stats, reml))
    return est, b2, b2_covs
