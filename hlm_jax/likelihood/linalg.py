"""Small dense linear algebra written out entry by entry so it vectorises over groups and replicates.

Batched `jnp.linalg` calls on 2×2 or 3×3 matrices turn into many tiny LAPACK calls;
the unrolled forms below are plain elementwise arithmetic over the leading (batch)
axes. Up to COLUMNS_MAX the factorisation and solves are k rank-one updates of whole
(..., k, k) arrays, still elementwise over the batch axes: batched LAPACK calls (jaxlib's
CPU triangular solve splits a batch over the intra-op thread pool) can deadlock when
two run at once inside a vmapped while loop on a small machine, and run slower there.
Larger matrices fall back to `jnp.linalg`.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.scipy.linalg import solve_triangular

UNROLL_MAX = 6
COLUMNS_MAX = 64


def _less(x: jnp.ndarray, terms) -> jnp.ndarray:
    """x minus the sum of `terms`, x itself when there are none (no zero array to add: fewer operations to trace)."""
    terms = list(terms)
    if not terms:
        return x
    total = terms[0]
    for t in terms[1:]:
        total = total + t
    return x - total


def cholesky(M: jnp.ndarray) -> jnp.ndarray:
    """Lower Cholesky factor of symmetric positive-definite M (..., k, k)."""
    k = M.shape[-1]
    if k > COLUMNS_MAX:
        return jnp.linalg.cholesky(M)
    if k > UNROLL_MAX:
        return _cholesky_columns(M)
    L = [[None] * k for _ in range(k)]
    for j in range(k):
        d = _less(M[..., j, j], (L[j][m] ** 2 for m in range(j)))
        L[j][j] = jnp.sqrt(d)
        for i in range(j + 1, k):
            s = _less(M[..., i, j], (L[i][m] * L[j][m] for m in range(j)))
            L[i][j] = s / L[j][j]
    zero = jnp.zeros_like(M[..., 0, 0])
    return jnp.stack([jnp.stack([L[i][j] if j <= i else zero for j in range(k)], -1) for i in range(k)], -2)


def solve_lower(L: jnp.ndarray, B: jnp.ndarray) -> jnp.ndarray:
    """L⁻¹ B for lower-triangular L (..., k, k) and B (..., k, m) by forward substitution."""
    k = L.shape[-1]
    if k > COLUMNS_MAX:
        return solve_triangular(L, B, lower=True)
    if k > UNROLL_MAX:
        return _solve_columns(L, B, False)
    rows = []
    for i in range(k):
        s = _less(B[..., i, :], (L[..., i, m, None] * rows[m] for m in range(i)))
        rows.append(s / L[..., i, i, None])
    return jnp.stack(rows, -2)


def solve_upper_t(L: jnp.ndarray, B: jnp.ndarray) -> jnp.ndarray:
    """L⁻ᵀ B for lower-triangular L (..., k, k) and B (..., k, m) by back substitution."""
    k = L.shape[-1]
    if k > COLUMNS_MAX:
        return solve_triangular(L, B, lower=True, trans=1)
    if k > UNROLL_MAX:
        return _solve_columns(L, B, True)
    rows = [None] * k
    for i in reversed(range(k)):
        s = _less(B[..., i, :], (L[..., m, i, None] * rows[m] for m in range(i + 1, k)))
        rows[i] = s / L[..., i, i, None]
    return jnp.stack(rows, -2)


def _cholesky_columns(M: jnp.ndarray) -> jnp.ndarray:
    """Right-looking Cholesky in a loop over columns: l_j from the updated M, then M − l_j l_jᵀ
    (k rank-one updates; one loop body, so the program stays small under autodiff)."""
    k = M.shape[-1]
    below = jnp.arange(k)

    def step(j, carry):
        M, L = carry
        col = jnp.where(below >= j, jnp.take(M, j, axis=-1) / jnp.sqrt(M[..., j, j])[..., None], 0.0)
        return M - col[..., :, None] * col[..., None, :], L + col[..., :, None] * (below == j)

    return jax.lax.fori_loop(0, k, step, (M, jnp.zeros_like(M)))[1]


def _solve_columns(L: jnp.ndarray, B: jnp.ndarray, transpose: bool) -> jnp.ndarray:
    """L⁻¹B (or L⁻ᵀB) by rank-one updates in a loop: x_i = B_i / L_ii, then B −= l x_iᵀ with l
    L's column i (row i for L⁻ᵀB; solved rows are not read again); forward (backward) order."""
    k = L.shape[-1]
    rows = jnp.arange(k)

    def step(t, carry):
        B, X = carry
        i = k - 1 - t if transpose else t
        x = jnp.take(B, i, axis=-2) / L[..., i, i][..., None]
        l = jnp.take(L, i, axis=-2) if transpose else jnp.take(L, i, axis=-1)
        return B - l[..., :, None] * x[..., None, :], X + (rows == i)[:, None] * x[..., None, :]

    return jax.lax.fori_loop(0, k, step, (B, jnp.zeros_like(B)))[1]


def log_diag_sum(L: jnp.ndarray) -> jnp.ndarray:
    """Σ log L_ii over the last two axes (half the log-determinant of L Lᵀ)."""
    return jnp.sum(jnp.log(jnp.diagonal(L, axis1=-2, axis2=-1)), axis=-1)


def mT(A: jnp.ndarray) -> jnp.ndarray:
    """Transpose of the last two axes."""
    return jnp.swapaxes(A, -1, -2)
