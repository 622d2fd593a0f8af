"""Small dense linear algebra written out entry by entry so it vectorises over groups and replicates.

Batched `jnp.linalg` calls on 2×2 or 3×3 matrices turn into many tiny LAPACK calls;
the unrolled forms below are plain elementwise arithmetic over the leading (batch)
axes. Larger matrices fall back to `jnp.linalg`.
"""
from __future__ import annotations

import jax.numpy as jnp
from jax.scipy.linalg import solve_triangular

UNROLL_MAX = 6


def cholesky(M: jnp.ndarray) -> jnp.ndarray:
    """Lower Cholesky factor of symmetric positive-definite M (..., k, k)."""
    k = M.shape[-1]
    if k > UNROLL_MAX:
        return jnp.linalg.cholesky(M)
    L = [[None] * k for _ in range(k)]
    for j in range(k):
        d = M[..., j, j] - sum((L[j][m] ** 2 for m in range(j)), jnp.zeros_like(M[..., j, j]))
        L[j][j] = jnp.sqrt(d)
        for i in range(j + 1, k):
            s = M[..., i, j] - sum((L[i][m] * L[j][m] for m in range(j)), jnp.zeros_like(d))
            L[i][j] = s / L[j][j]
    zero = jnp.zeros_like(M[..., 0, 0])
    return jnp.stack([jnp.stack([L[i][j] if j <= i else zero for j in range(k)], -1) for i in range(k)], -2)


def solve_lower(L: jnp.ndarray, B: jnp.ndarray) -> jnp.ndarray:
    """L⁻¹ B for lower-triangular L (..., k, k) and B (..., k, m) by forward substitution."""
    k = L.shape[-1]
    if k > UNROLL_MAX:
        return solve_triangular(L, B, lower=True)
    rows = []
    for i in range(k):
        s = B[..., i, :] - sum((L[..., i, m, None] * rows[m] for m in range(i)), jnp.zeros_like(B[..., i, :]))
        rows.append(s / L[..., i, i, None])
    return jnp.stack(rows, -2)


def solve_upper_t(L: jnp.ndarray, B: jnp.ndarray) -> jnp.ndarray:
    """L⁻ᵀ B for lower-triangular L (..., k, k) and B (..., k, m) by back substitution."""
    k = L.shape[-1]
    if k > UNROLL_MAX:
        return solve_triangular(L, B, lower=True, trans=1)
    rows = [None] * k
    for i in reversed(range(k)):
        s = B[..., i, :] - sum((L[..., m, i, None] * rows[m] for m in range(i + 1, k)), jnp.zeros_like(B[..., i, :]))
        rows[i] = s / L[..., i, i, None]
    return jnp.stack(rows, -2)


def log_diag_sum(L: jnp.ndarray) -> jnp.ndarray:
    """Σ log L_ii over the last two axes (half the log-determinant of L Lᵀ)."""
    return jnp.sum(jnp.log(jnp.diagonal(L, axis1=-2, axis2=-1)), axis=-1)


def mT(A: jnp.ndarray) -> jnp.ndarray:
    """Transpose of the last two axes."""
    return jnp.swapaxes(A, -1, -2)
