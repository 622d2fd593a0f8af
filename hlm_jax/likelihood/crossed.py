"""Several grouping factors (crossed or nested): the profiled criterion with a blocked Cholesky factor.

The random effects are ordered by factor, the factor with most levels first. Its
part of A = ΛᵀZᵀZΛ + I is block diagonal (per-level q₁ × q₁ blocks, as in `lmm`);
the other factors together form a dense part of size Q₂ = Σ_k q_k l_k:

    L = [[L₁₁, 0], [L₂₁, L₂₂]],  L₂₁ = Λ₂ᵀ F,  F = (Z₂ᵀZ₁Λ₁) L₁₁⁻ᵀ,
    L₂₂L₂₂ᵀ = Λ₂ᵀ(Z₂ᵀZ₂ − F Fᵀ)Λ₂ + I.

Z₂ᵀZ₁ is sparse (a cross-tabulation of the levels): it is kept as its nonzero entries
v_e, each a q₁-vector at (row r_e of Z₂ᵀ, level g_e of factor 1). Then

    F Fᵀ = Σ_g Σ_{e,e' at g} ⟨W_g, v_e v_e'ᵀ⟩ at (r_e, r_e'),  W_g = Λ₁(L_gL_gᵀ)⁻¹Λ₁ᵀ,

so θ enters only through the small W_g; the products v_e v_e'ᵀ of the pairs of entries
sharing a level are fixed and precomputed (pairs e ≤ e' only: F Fᵀ is symmetric). One
evaluation costs O(P q₁² + Q₂³/3) for P such pairs; no dense (Q₂ × l₁q₁) matrix is formed.

Memory: 8 bytes × (3 Q₂² for Z₂ᵀZ₂, the Schur complement and its factor
+ E (q₁ + 2) for the E cross entries + P (q₁² + 2) for the pairs' products and indices
+ the one-factor statistics l₁ (q₁² + q₁ p + q₁)). InstEval's `(1|s) + (1|d) + (1|dept)`:
Q₂ = 1,142, E ≈ 9·10⁴, P ≈ 1.8·10⁶ → about 75 MB. A Newton step (`crossed_newton`) adds its M × M
work arrays and the pairs' values per channel: see the formula there.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import jax
import jax.numpy as jnp

from . import linalg
from .lmm import PLS, Estimates, Stats, criterion, factor_block, fixed_block, relative_factor


@jax.tree_util.register_dataclass
@dataclass(frozen=True)
class CrossedStats:
    """Sufficient statistics of a multi-factor LMM: the first factor's (`first`) plus the dense part.

    Z2tZ2 (Q₂, Q₂), Z2tX (Q₂, p), Z2ty (Q₂,); the nonzeros of Z₂ᵀZ₁: cross_row (E,),
    cross_group (E,), cross_val (E, q₁); for each pair e ≤ e' of entries sharing a level:
    pair_row_a, pair_row_b (P,) = (r_e, r_e'), pair_group (P,) = g, pair_val (P, q₁, q₁) = v_e v_e'ᵀ.
    `blocks` gives, per other factor, (offset, levels, q, structure of its Λ_k); every structure
    (the first factor's too) takes the whole θ. For small models the same cross-tabulation is also
    held dense, so the scatters become matrix products (fast under vmap): cross_dense (Q₂, l₁q₁) is
    Z₂ᵀZ₁, pair_dense (l₁q₁q₁, Q₂Q₂) maps the W_g to F Fᵀ; both are (0, 0) when too large.
    """

    first: Stats
    Z2tZ2: jax.Array
    Z2tX: jax.Array
    Z2ty: jax.Array
    cross_row: jax.Array
    cross_group: jax.Array
    cross_val: jax.Array
    pair_row_a: jax.Array
    pair_row_b: jax.Array
    pair_group: jax.Array
    pair_val: jax.Array
    cross_dense: jax.Array
    pair_dense: jax.Array
    blocks: tuple = field(metadata=dict(static=True))

    @property
    def Q2(self) -> int:
        return self.Z2tZ2.shape[0]


def block_factors(theta: jax.Array, stats: CrossedStats) -> list[jax.Array]:
    """Λ_k (q_k × q_k) of each factor after the first."""
    return [structure.lam(theta) for *_, structure in stats.blocks]


def apply_lambda2_t(M: jax.Array, lams: list[jax.Array], stats: CrossedStats) -> jax.Array:
    """Λ₂ᵀ M for M (Q₂, m): Λ₂ is block diagonal with Λ_k repeated once per level of factor k."""
    parts = []
    for (offset, levels, q, *_), lam in zip(stats.blocks, lams):
        Mk = M[offset:offset + levels * q].reshape(levels, q, -1)
        parts.append(jnp.einsum("ji,ljm->lim", lam, Mk).reshape(levels * q, -1))
    return jnp.concatenate(parts, axis=0)


def _sandwich(M: jax.Array, lams: list[jax.Array], stats: CrossedStats) -> jax.Array:
    """Λ₂ᵀ M Λ₂ for symmetric M (Q₂, Q₂)."""
    left = apply_lambda2_t(M, lams, stats)
    return apply_lambda2_t(left.T, lams, stats).T


def _cross_times(V: jax.Array, stats: CrossedStats) -> jax.Array:
    """(Z₂ᵀZ₁) V for V (l₁, q₁, m): row r gets Σ over entries e at r of v_eᵀ V_{g_e}."""
    if stats.cross_dense.size:
        return stats.cross_dense @ V.reshape(-1, V.shape[-1])
    contrib = jnp.einsum("eq,eqm->em", stats.cross_val, V[stats.cross_group])
    return jnp.zeros((stats.Q2, V.shape[-1]), V.dtype).at[stats.cross_row].add(contrib)


def _schur_update(W: jax.Array, stats: CrossedStats) -> jax.Array:
    """F Fᵀ = Σ over pairs of ⟨W_g, v_e v_e'ᵀ⟩, scattered to (r_e, r_e') and mirrored."""
    if stats.pair_dense.size:
        return (W.reshape(-1) @ stats.pair_dense).reshape(stats.Q2, stats.Q2)
    values = jnp.einsum("pij,pij->p", W[stats.pair_group], stats.pair_val)
    S = jnp.zeros((stats.Q2, stats.Q2), W.dtype).at[stats.pair_row_a, stats.pair_row_b].add(values)
    return S + S.T - jnp.diag(jnp.diagonal(S))


@jax.custom_jvp
def logdet_and_quadratic_form(A: jax.Array, B: jax.Array) -> tuple[jax.Array, jax.Array]:
    """log|A| and BᵀA⁻¹B for symmetric positive-definite A (n × n) and B (n × m).

    Its derivative rule uses A⁻¹ directly (d log|A| = tr(A⁻¹dA), d(BᵀA⁻¹B) = dBᵀX + XᵀdB − XᵀdA X
    with X = A⁻¹B): about one extra factorisation's work, where differentiating through the
    Cholesky factor costs many (what makes a large dense block's gradient expensive).
    """
    L = linalg.cholesky(A)
    Y = linalg.solve_lower(L, B)
    return 2.0 * linalg.log_diag_sum(L), Y.T @ Y


@logdet_and_quadratic_form.defjvp
def _logdet_and_quadratic_form_jvp(primals, tangents):
    A, B = primals
    dA, dB = tangents
    L = linalg.cholesky(A)
    Linv = linalg.solve_lower(L, jnp.eye(A.shape[0], dtype=A.dtype))
    Ainv = Linv.T @ Linv
    X = Ainv @ B
    d_logdet = jnp.sum(Ainv * dA)
    d_quad = dB.T @ X + X.T @ dB - X.T @ dA @ X
    return (2.0 * linalg.log_diag_sum(L), B.T @ X), (d_logdet, d_quad)


def _dense_system(theta: jax.Array, stats: CrossedStats):
    """The first factor's pieces and the dense part's A₂₂ = L₂₂L₂₂ᵀ and Λ₂ᵀ(right-hand sides); with one
    grouping factor there is no dense part (A₂₂ and the right-hand sides are None)."""
    first = stats.first
    lam1 = relative_factor(theta, first)
    L1, RZX1, cu1 = factor_block(lam1, first.ZtZ, first.ZtX, first.Zty)
    if not stats.blocks:
        return lam1, L1, RZX1, cu1, [], None, None
    lams = block_factors(theta, stats)
    W = first_weights(theta, stats)[2]
    A22 = _sandwich(stats.Z2tZ2 - _schur_update(W, stats), lams, stats) + jnp.eye(stats.Q2)
    # L₂₁ [R_ZX,1 | c_u,1] = Λ₂ᵀ (Z₂ᵀZ₁) Λ₁ L₁⁻ᵀ L₁⁻¹ Λ₁ᵀ [Z₁ᵀX | Z₁ᵀy] = Λ₂ᵀ (Z₂ᵀZ₁) W [Z₁ᵀX | Z₁ᵀy]
    first_rhs = jnp.concatenate([first.ZtX, first.Zty[..., None]], axis=-1)
    rhs = jnp.concatenate([stats.Z2tX, stats.Z2ty[:, None]], axis=1) - _cross_times(W @ first_rhs, stats)
    return lam1, L1, RZX1, cu1, lams, A22, apply_lambda2_t(rhs, lams, stats)


def _assemble(first: Stats, lam1, L1, RZX1, cu1, logdet22, Q) -> PLS:
    """The whole model's PLS pieces from the first factor's and the dense part's [R_ZX,2 c_u,2]ᵀ[R_ZX,2 c_u,2] = Q."""
    RX, cb, r2 = fixed_block(
        first.XtX, first.Xty, first.yty,
        jnp.einsum("gqi,gqj->ij", RZX1, RZX1) + Q[:-1, :-1],
        jnp.einsum("gqi,gq->i", RZX1, cu1) + Q[:-1, -1],
        jnp.sum(cu1 * cu1) + Q[-1, -1])
    logdet = 2.0 * jnp.sum(linalg.log_diag_sum(L1)) + logdet22
    return PLS(lam1, L1, RZX1, cu1, RX, cb, r2, logdet, 2.0 * linalg.log_diag_sum(RX))


def decompose(theta: jax.Array, stats: CrossedStats):
    """Blocked Cholesky factorisation at θ; returns (PLS of the whole model, extras for estimates)."""
    lam1, L1, RZX1, cu1, lams, A22, rhs = _dense_system(theta, stats)
    L22 = linalg.cholesky(A22)
    R2 = linalg.solve_lower(L22, rhs)
    pls = _assemble(stats.first, lam1, L1, RZX1, cu1, 2.0 * linalg.log_diag_sum(L22), R2.T @ R2)
    return pls, (lams, L22, R2[:, :-1], R2[:, -1])


def objective(theta: jax.Array, stats: CrossedStats, reml: jax.Array) -> jax.Array:
    """The profiled REML criterion or ML deviance as a function of θ, for any number of grouping factors
    (one is the case without a dense part; the dense part goes through `logdet_and_quadratic_form`,
    whose derivatives are cheap)."""
    lam1, L1, RZX1, cu1, _, A22, rhs = _dense_system(theta, stats)
    p = stats.first.p
    logdet22, Q = logdet_and_quadratic_form(A22, rhs) if stats.blocks else (0.0, jnp.zeros((p + 1, p + 1)))
    return criterion(_assemble(stats.first, lam1, L1, RZX1, cu1, logdet22, Q), stats.first.n, stats.first.p, reml)


def first_weights(theta: jax.Array, stats: CrossedStats) -> tuple[jax.Array, jax.Array, jax.Array]:
    """The first factor's Λ₁, its factors L_g (L_gL_gᵀ = Λ₁ᵀZ_gᵀZ_gΛ₁ + I) and W_g = Λ₁(L_gL_gᵀ)⁻¹Λ₁ᵀ."""
    lam1 = relative_factor(theta, stats.first)
    L1 = linalg.cholesky(lam1.T @ stats.first.ZtZ @ lam1 + jnp.eye(lam1.shape[0]))
    T = linalg.solve_lower(L1, jnp.broadcast_to(lam1.T, L1.shape))  # L_g⁻¹Λ₁ᵀ
    return lam1, L1, linalg.mT(T) @ T


def gram(stats: CrossedStats) -> jax.Array:
    """[Z₂ X y]ᵀ[Z₂ X y] (M × M, M = Q₂ + p + 1; y centred at β₀)."""
    first = stats.first
    side = jnp.concatenate([stats.Z2tX, stats.Z2ty[:, None]], axis=1)
    corner = jnp.block([[first.XtX, first.Xty[:, None]], [first.Xty[None], first.yty[None, None]]])
    return jnp.block([[stats.Z2tZ2, side], [side.T, corner]])


def schur_matrix(W: jax.Array, stats: CrossedStats) -> jax.Array:
    """Σ_g h_g W_g h_gᵀ (M × M) with h_g = [Z₂ X y]ᵀZ₁_g: what eliminating the first factor takes from `gram`."""
    first = stats.first
    first_rhs = jnp.concatenate([first.ZtX, first.Zty[..., None]], axis=-1)
    side = _cross_times(W @ first_rhs, stats)
    corner = jnp.einsum("gqi,gqr,grj->ij", first_rhs, W, first_rhs)
    return jnp.block([[_schur_update(W, stats), side], [side.T, corner]])


def scale_dense(Y: jax.Array, lams: list[jax.Array], stats: CrossedStats) -> jax.Array:
    """ΔᵀYΔ for Y (M × M), Δ = diag(Λ₂, I_{p+1})."""
    Q2 = stats.Q2
    rows = jnp.concatenate([apply_lambda2_t(Y[:Q2], lams, stats), Y[Q2:]], axis=0)
    return jnp.concatenate([apply_lambda2_t(rows[:, :Q2].T, lams, stats).T, rows[:, Q2:]], axis=1)


def augmented(theta: jax.Array, stats: CrossedStats) -> tuple[jax.Array, jax.Array]:
    """The first factor's log|L₁|² and the reduced augmented matrix Ω = Δᵀ(gram − schur_matrix)Δ + J at θ
    (M × M, J = diag(I_Q₂, 0)): its Cholesky factor holds L₂₂, R_X and r (see `likelihood.crossed_newton`)."""
    _, L1, W = first_weights(theta, stats)
    omega = scale_dense(gram(stats) - schur_matrix(W, stats), block_factors(theta, stats), stats)
    J = jnp.concatenate([jnp.ones(stats.Q2), jnp.zeros(stats.first.p + 1)])
    return 2.0 * jnp.sum(linalg.log_diag_sum(L1)), omega + jnp.diag(J)


def estimates(theta: jax.Array, stats: CrossedStats, reml: jax.Array) -> tuple[Estimates, jax.Array, tuple]:
    """β̂, σ̂, vcov(β̂) and the first factor's modes/covariances (as `lmm.Estimates`), plus the other
    factors' conditional modes b₂ = Λ₂u₂ (Q₂,) and, per other factor, cov(b | y) per level (l_k, q_k, q_k).
    The first factor's blocks of (LLᵀ)⁻¹ are L₁⁻ᵀ(I + KᵀK)L₁⁻¹ with K = L₂₂⁻¹L₂₁."""
    pls, (lams, L22, RZX2, cu2) = decompose(theta, stats)
    F = linalg.solve_lower(pls.L[stats.cross_group], (stats.cross_val @ pls.lam)[..., None])[..., 0]
    first = stats.first
    p = first.p
    beta = linalg.solve_upper_t(pls.RX, pls.cb[:, None])[:, 0]
    sigma2 = pls.r2 / (first.n - reml * p)
    RXinv = linalg.solve_lower(pls.RX, jnp.eye(p))
    vcov = sigma2 * RXinv.T @ RXinv
    u2 = linalg.solve_upper_t(L22, (cu2 - RZX2 @ beta)[:, None])[:, 0]
    lam2_u2 = _apply_lambda2(u2, lams, stats)
    Ft_u = jnp.zeros_like(pls.cu).at[stats.cross_group].add(F * lam2_u2[stats.cross_row][:, None])
    u1 = linalg.solve_upper_t(pls.L, (pls.cu - jnp.einsum("gqi,i->gq", pls.RZX, beta) - Ft_u)[..., None])[..., 0]
    b1 = u1 @ pls.lam.T
    L21 = apply_lambda2_t(_dense_F(F, stats), lams, stats)  # (Q₂, l₁ q₁)
    K = linalg.solve_lower(L22, L21).reshape(stats.Q2, -1, first.q)
    inner = jnp.eye(first.q) + jnp.einsum("rgi,rgj->gij", K, K)
    L1inv = linalg.solve_lower(pls.L, jnp.broadcast_to(jnp.eye(first.q), pls.L.shape))
    W = pls.lam @ linalg.mT(L1inv)
    b1_cov = sigma2 * W @ inner @ linalg.mT(W)
    L22inv = linalg.solve_lower(L22, jnp.eye(stats.Q2))
    b2_cov = tuple(sigma2 * cov for cov in _block_diagonal_cov(L22inv, lams, stats))
    est = Estimates(beta, jnp.sqrt(sigma2), vcov, b1, b1_cov, criterion(pls, first.n, p, reml))
    return est, lam2_u2, b2_cov


def _apply_lambda2(v: jax.Array, lams: list[jax.Array], stats: CrossedStats) -> jax.Array:
    """Λ₂ v for v (Q₂,)."""
    parts = []
    for (offset, levels, q, *_), lam in zip(stats.blocks, lams):
        parts.append((v[offset:offset + levels * q].reshape(levels, q) @ lam.T).reshape(-1))
    return jnp.concatenate(parts)


def _dense_F(F: jax.Array, stats: CrossedStats) -> jax.Array:
    """F as a dense (Q₂, l₁ q₁) matrix (only for the conditional variances, once per fit)."""
    G, q = stats.first.ZtZ.shape[0], stats.first.q
    return jnp.zeros((stats.Q2, G, q), F.dtype).at[stats.cross_row, stats.cross_group].add(F).reshape(stats.Q2, G * q)


def _block_diagonal_cov(L22inv: jax.Array, lams: list[jax.Array], stats: CrossedStats) -> tuple:
    """Per other factor k, Λ_k [(L₂₂L₂₂ᵀ)⁻¹]_level Λ_kᵀ for each of its levels: (l_k, q_k, q_k)."""
    out = []
    for (offset, levels, q, *_), lam in zip(stats.blocks, lams):
        cols = L22inv[:, offset:offset + levels * q].reshape(stats.Q2, levels, q)
        out.append(lam @ jnp.einsum("rli,rlj->lij", cols, cols) @ lam.T)
    return tuple(out)
