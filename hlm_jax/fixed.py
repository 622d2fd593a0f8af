"""Wide fixed effects: aliased columns dropped as R drops them, and sufficient statistics from a sparse X.

The formula package builds X in R's column order and names (`formula.model_matrix(sparse=True)`:
indicator columns of factors with thousands of levels have one nonzero per row, so X is kept sparse).

Aliased columns are dropped as R's `qr(X, tol = 1e-7)` (LINPACK dqrdc2, the rank check lme4 and
lm use) drops them: scanning left to right, a column is aliased when the norm of its residual on
the kept columns before it is below 1e-7 times its own norm. dqrdc2 pivots only such columns to
the end, so the kept columns are the first linearly independent ones in formula order. The
residual norms come from a Cholesky factorisation of XᵀX in column order (blocked, one column
at a time only inside a block), so X is never densified. A squared norm from XᵀX carries a
rounding error of about p·ε relative (InstEval's exactly aliased lecturer columns come out at
3e-14, above R's 1e-14 = tol²), so the test is d_j ≤ max(tol², 2pε)·‖x_j‖²: R's rule exactly for
p ≤ 22, and for wider X it also drops columns whose relative residual norm is below √(2pε)
(6.6e-7 at p = 1,000), a band where only near-collinear numeric columns can fall.

Sufficient statistics (`segment_products`) are sums of products over rows, scattered by level:
ZᵀX per group, Z₂ᵀX, XᵀX, from a dense or a sparse X alike.

The linear algebra here is numpy's (`solve_triangular`, np.linalg.cholesky), not scipy.linalg: importing
scipy.linalg costs a first fit 0.25-0.3 s (its __init__ loads scipy's array-API layer, numpy.f2py and more).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .formula.sparse import issparse, scipy_sparse

ALIAS_TOL = 1e-7  # R's qr() default, used by lm and lme4's rank check
SHOWN_DROPPED = 6  # names listed in the aliasing warning
SOLVE_BLOCK = 128  # diagonal blocks of a triangular solve handed to LAPACK whole


def solve_triangular(T: np.ndarray, B: np.ndarray, lower: bool = True) -> np.ndarray:
    """T⁻¹B for a triangular T (p × p; only its lower or upper triangle is read) and B (p or p × m), by blocked
    substitution: LAPACK's solver on each diagonal block, matrix products for the rest, so O(p²m) as
    scipy.linalg.solve_triangular (not O(p³))."""
    if not lower:  # reversing rows and columns makes an upper triangular system a lower one
        return np.ascontiguousarray(solve_triangular(T[::-1, ::-1], B[::-1], lower=True)[::-1])
    X = np.array(B, dtype=float)
    for start in range(0, T.shape[0], SOLVE_BLOCK):
        block = slice(start, start + SOLVE_BLOCK)
        X[block] = np.linalg.solve(np.tril(T[block, block]), X[block] - T[block, :start] @ X[:start])
    return X


def gram(X) -> np.ndarray:
    """XᵀX as a dense array, for a dense or a sparse X."""
    G = X.T @ X
    return np.asarray(G.toarray() if issparse(G) else G, dtype=float)


def independent_columns(XtX: np.ndarray, tol: float = ALIAS_TOL, block: int = 64) -> np.ndarray:
    """Mask of the columns R's qr(X, tol) keeps (see `kept_columns`)."""
    return kept_columns(XtX, tol, block).mask


def kept_columns(XtX: np.ndarray, tol: float = ALIAS_TOL, block: int = 64) -> Kept:
    """The columns R's qr(X, tol) keeps and the upper Cholesky factor of their XᵀX: left to right, column j is
    aliased when its residual on the kept columns before it has norm below tol·‖x_j‖. XtX is XᵀX; the
    Cholesky factor R of the kept columns gives the squared residual norm as XtX_jj − |R⁻ᵀ XtX_{kept, j}|²."""
    p = XtX.shape[0]
    tol2 = max(tol * tol, 2 * p * np.finfo(float).eps)
    if p <= block:  # one block: no Schur complement to form
        return _whole_cholesky(XtX, tol2) or _sequential_cholesky(XtX, np.diag(XtX), tol2)
    keep = np.zeros(p, dtype=bool)
    R = np.zeros((0, 0))
    for start in range(0, p, block):
        cols = np.arange(start, min(start + block, p))
        kept = np.flatnonzero(keep)
        C = solve_triangular(R.T, XtX[np.ix_(kept, cols)]) if kept.size else np.zeros((0, cols.size))
        S = XtX[np.ix_(cols, cols)] - C.T @ C
        local = _sequential_cholesky(S, np.diag(XtX)[cols], tol2)
        keep[cols] = local.mask
        if local.mask.any():
            mine = np.flatnonzero(local.mask)
            R = np.block([[R, C[:, mine]], [np.zeros((mine.size, R.shape[1])), local.R]]) if kept.size else local.R
    return Kept(keep, R)


@dataclass(frozen=True)
class Kept:
    """A mask of columns and the upper Cholesky factor R of the kept columns' Gram matrix (or of a block's
    Schur complement)."""

    mask: np.ndarray
    R: np.ndarray


def _whole_cholesky(XtX: np.ndarray, tol2: float) -> Kept | None:
    """All columns kept and XᵀX's factor from one LAPACK factorisation, when X is well conditioned: every
    pivot ratio d_j/‖x_j‖² at least r = max(4·tol2, 1e-6·p²). The pivots' rounding grows with X's condition
    (about p³ε/r relative), and at that r it is below 1e-3 of every pivot, so the column-by-column scan would
    keep every column too. None otherwise (then the scan decides)."""
    try:
        L = np.linalg.cholesky(XtX)
    except np.linalg.LinAlgError:
        return None
    norms2 = np.diag(XtX)
    if np.all(norms2 > 0) and np.all(np.diag(L) ** 2 > max(4 * tol2, 1e-6 * len(norms2) ** 2) * norms2):
        return Kept(np.ones(len(norms2), dtype=bool), L.T)
    return None


def _sequential_cholesky(S: np.ndarray, norms2: np.ndarray, tol2: float) -> Kept:
    """Within one block: keep column i when its Schur-complement diagonal exceeds tol2·‖x_i‖²; the
    upper Cholesky factor of the kept columns' S. Right-looking: each kept column's row of the factor is
    taken out of the remaining block at once, so no triangular solve runs per column."""
    m = S.shape[0]
    mask = np.zeros(m, dtype=bool)
    R = np.zeros((m, m))
    W = np.array(S, dtype=float)  # the Schur complement of the kept columns so far
    for i in range(m):
        d = W[i, i]
        if norms2[i] > 0 and d > tol2 * norms2[i]:
            mask[i] = True
            R[i, i] = np.sqrt(d)
            R[i, i + 1:] = W[i, i + 1:] / R[i, i]
            W[i + 1:, i + 1:] -= np.outer(R[i, i + 1:], R[i, i + 1:])
    kept = np.flatnonzero(mask)
    return Kept(mask, R[np.ix_(kept, kept)])


def segment_products(index: np.ndarray, weight: np.ndarray, n_out: int, X) -> np.ndarray:
    """M X as a dense (n_out, p) array, where M (n_out × n) has M[index[r, k], r] = weight[r, k]:
    per-level sums Σ_{rows at level} z_r x_rᵀ (ZᵀX by group) for a dense or a sparse X."""
    n, k = index.shape
    if not issparse(X):  # per-column weighted counts: no sparse matrix to build (10x faster for small q)
        X = np.asarray(X, float).reshape(n, -1)
        out = np.zeros((n_out, X.shape[1]))
        for j in range(k):
            for c in range(X.shape[1]):
                out[:, c] += np.bincount(index[:, j], weight[:, j] * X[:, c], minlength=n_out)
        return out
    M = scipy_sparse().csr_matrix((np.asarray(weight, float).ravel(), (index.ravel(), np.repeat(np.arange(n), k))),
                                  shape=(n_out, n))
    out = M @ X
    return np.asarray(out.toarray() if issparse(out) else out, dtype=float)


def least_squares(X, y: np.ndarray, XtX: np.ndarray | None = None) -> np.ndarray:
    """β of y on a full-column-rank X (dense or sparse) from the normal equations' Cholesky factor."""
    XtX = gram(X) if XtX is None else XtX
    if XtX.shape[0] == 0:
        return np.zeros(0)
    L = np.linalg.cholesky(XtX)
    return solve_triangular(L.T, solve_triangular(L, np.asarray(X.T @ y, dtype=float).ravel()), lower=False)


def dropped_message(dropped) -> str:
    """The aliasing warning: the count and the first few names."""
    shown = ", ".join(dropped[:SHOWN_DROPPED]) + (", ..." if len(dropped) > SHOWN_DROPPED else "")
    return (f"fixed-effect model matrix is rank deficient: dropping {len(dropped)} column(s): {shown} "
            "(the first linearly independent columns in formula order are kept, as R's qr; "
            "the dropped ones are listed in .dropped_fixed)")


def group_sums(X, Z: np.ndarray, codes: np.ndarray, y: np.ndarray, n_slots: int):
    """One grouping factor's sufficient statistics from row-level X (dense or sparse), Z (n × q), level
    codes and y: ZᵀZ, ZᵀX, Zᵀy per level (n_slots levels, the unused ones zero), XᵀX, Xᵀy, yᵀy, n.
    The same sums as the padded per-group tensors give, without padding X."""
    n, q = Z.shape
    index = codes[:, None] * q + np.arange(q)[None, :]
    ZtX = segment_products(index, Z, n_slots * q, X).reshape(n_slots, q, -1)
    ZtZ = segment_products(index, Z, n_slots * q, Z).reshape(n_slots, q, q)
    Zty = segment_products(index, Z, n_slots * q, y[:, None]).reshape(n_slots, q)
    Xty = np.asarray(X.T @ y, dtype=float).ravel()
    return ZtZ, ZtX, Zty, gram(X), Xty, float(y @ y), float(n)


SPAN_CHECK_COLUMNS = 500  # random-effect factors with at most this many columns are checked (cheap: p × l·q)


def in_fixed_span(X, Z: np.ndarray, codes: np.ndarray, n_levels: int, R: np.ndarray | None = None) -> bool:
    """Whether every column of a factor's Z (n_levels·q columns) lies in the column span of X, by the
    aliasing rule: the variance of such a term is not identified (the fixed effects absorb any b). R: the
    upper Cholesky factor of XᵀX when it is at hand (`kept_columns`), else computed here."""
    n, q = Z.shape
    if X.shape[1] == 0:
        return False
    index = codes[:, None] * q + np.arange(q)[None, :]
    XtZ = segment_products(index, Z, n_levels * q, X).T
    norms = segment_products(index, Z * Z, n_levels * q, np.ones((n, 1)))[:, 0]
    L = np.linalg.cholesky(gram(X)) if R is None else R.T
    C = solve_triangular(L, XtZ)
    resid = norms - np.einsum("ij,ij->j", C, C)
    tol2 = max(ALIAS_TOL ** 2, 2 * (X.shape[1] + 1) * np.finfo(float).eps)
    return bool(np.all(resid <= tol2 * norms))
