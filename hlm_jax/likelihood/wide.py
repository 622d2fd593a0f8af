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
log|M_t| and mᵀM_t⁻¹m come through `crossed.logdet_and_quadratic_form`, whose derivative rule costs
one inverse. One evaluation: O(P q₁² + k³/3). Memory: 8 bytes × (4k² for C, M, its factor and the
inverse in the derivative + P(q₁² + 2)) + the first factor's l₁q₁² — for me_instr_eval1
(k = 1,795, P ≈ 3.3·10⁶) about 160 MB.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import jax
import jax.numpy as jnp

from . import linalg
from .crossed import apply_lambda2_t, block_factors, logdet_and_quadratic_form
from .lmm import Stats, relative_factor


@jax.tree_util.register_dataclass
@dataclass(frozen=True)
class WideStats:
    """`first` (the first factor's ZᵀZ per level and Λ₁'s structure), C (k, k), and per pair e ≤ e' of
    nonzero entries of K sharing a level: rows pair_row_a/pair_row_b (P,), level pair_group (P,) and
    v_e v_e'ᵀ (P, q₁, q₁). `blocks` are the other factors' (offset, levels, q, structure), as `crossed`."""

    first: Stats
    C: jax.Array
    pair_row_a: jax.Array
    pair_row_b: jax.Array
    pair_group: jax.Array
    pair_val: jax.Array
    n: jax.Array
    p: int = field(metadata=dict(static=True))
    Q2: int = field(metadata=dict(static=True))
    blocks: tuple = field(metadata=dict(static=True))


def _pair_sum(W: jax.Array, stats: WideStats) -> jax.Array:
    """Σ_g K_g W_g K_gᵀ (k × k) from the pairs: ⟨W_g, v_e v_e'ᵀ⟩ at (r_e, r_e'), mirrored."""
    values = jnp.einsum("pij,pij->p", W[stats.pair_group], stats.pair_val)
    k = stats.C.shape[0]
    S = jnp.zeros((k, k), W.dtype).at[stats.pair_row_a, stats.pair_row_b].add(values)
    return S + S.T - jnp.diag(jnp.diagonal(S))


def reduced_system(theta: jax.Array, stats: WideStats):
    """log|L₁|² and M(θ) (see the module docstring)."""
    first = stats.first
    lam1 = relative_factor(theta, first)
    L1 = linalg.cholesky(lam1.T @ first.ZtZ @ lam1 + jnp.eye(lam1.shape[0]))
    T = linalg.solve_lower(L1, jnp.broadcast_to(lam1.T, L1.shape))  # L_g⁻¹Λ₁ᵀ
    M = stats.C - _pair_sum(linalg.mT(T) @ T, stats)
    if stats.Q2:
        lams = block_factors(theta, stats)
        Q2 = stats.Q2
        M = jnp.concatenate([apply_lambda2_t(M[:Q2], lams, stats), M[Q2:]], axis=0)
        M = jnp.concatenate([apply_lambda2_t(M[:, :Q2].T, lams, stats).T, M[:, Q2:]], axis=1)
        M = M.at[jnp.arange(Q2), jnp.arange(Q2)].add(1.0)
    return 2.0 * jnp.sum(linalg.log_diag_sum(L1)), M


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
