"""Per-group least squares (lme4's lmList), all groups at once in padded buckets."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from ..design import DesignError, bucket_length, factor_codes, level_label
from ..formula import Name, check_columns, check_finite, deparse, model_matrix, parse_lmlist, response_values, variables
from ..messages import warn
from ..precision import float64
from ..report import with_timing
from .results import BatchWarning, LmList


def _plain_columns(terms, frame: pd.DataFrame):
    """X's columns when every term is a numeric column (the intercept as a scalar 1), taken straight
    from the frame; None when the general model matrix is needed."""
    names = [t[0].name for t in terms.terms if len(t) == 1 and isinstance(t[0], Name)]
    if len(names) != len(terms.terms) or not (names or terms.intercept) or \
            any(not pd.api.types.is_numeric_dtype(frame[c]) or frame[c].dtype == bool for c in names):
        return None
    cols = ([1.0] if terms.intercept else []) + [frame[c].to_numpy(dtype=float) for c in names]
    return cols, (["(Intercept)"] if terms.intercept else []) + names


def _aligned_empty(shape) -> np.ndarray:
    """An uninitialised float64 array on a 64-byte boundary: jax.device_put takes it without a copy."""
    nbytes = int(np.prod(shape)) * 8
    raw = np.empty(nbytes + 64, dtype=np.uint8)
    offset = (-raw.ctypes.data) % 64
    return raw[offset:offset + nbytes].view(np.float64).reshape(shape)


def _cholesky_lists(A: list[list]) -> list[list]:
    """Lower Cholesky factor of a small matrix held as nested lists of (G,) arrays (unit stride per entry)."""
    k = len(A)
    L = [[None] * k for _ in range(k)]
    for j in range(k):
        L[j][j] = jnp.sqrt(A[j][j] - sum((L[j][m] ** 2 for m in range(j)), 0.0))
        for i in range(j + 1, k):
            L[i][j] = (A[i][j] - sum((L[i][m] * L[j][m] for m in range(j)), 0.0)) / L[j][j]
    return L


def _forward(L, b: list) -> list:
    out = []
    for i in range(len(b)):
        out.append((b[i] - sum((L[i][m] * out[m] for m in range(i)), 0.0)) / L[i][i])
    return out


def _backward(L, b: list) -> list:
    k = len(b)
    out = [None] * k
    for i in reversed(range(k)):
        out[i] = (b[i] - sum((L[m][i] * out[m] for m in range(i + 1, k)), 0.0)) / L[i][i]
    return out


@jax.jit
def _ols_bucket(W, n):
    """Least squares per group of a padded bucket W = [X y] (G, rows, p + 1), zero rows padding.

    One pass forms every group's [X y]ᵀ[X y]; the normal equations are solved by Cholesky and
    refined once from the residuals (a second pass), which makes them as accurate as QR for
    well-conditioned X. Returns β, diag((XᵀX)⁻¹), the residual sum of squares, and full-rank flags.
    The p × p algebra is written out on (G,) vectors (entries with unit stride).
    """
    p = W.shape[-1] - 1
    C = jnp.einsum("gni,gnj->ijg", W, W)
    A = [[C[i, j] for j in range(p)] for i in range(p)]
    L = _cholesky_lists(A)
    # R's lm aliases a column whose residual on the earlier ones is below 1e-7 of its norm
    full_rank = (n >= p)
    for j in range(p):
        full_rank = full_rank & (L[j][j] ** 2 > 1e-14 * A[j][j]) & (A[j][j] > 0)

    def solve(b):
        return _backward(L, _forward(L, b))

    beta0 = solve([C[i, p] for i in range(p)])
    # residuals y − Xβ₀ = W·[−β₀, 1], and Wᵀr, without slicing (copying) X out of W
    resid = jnp.einsum("gni,ig->gn", W, jnp.stack([-b for b in beta0] + [jnp.ones_like(beta0[0])]))
    Xtr_all = jnp.einsum("gni,gn->ig", W, resid)
    Xtr = [Xtr_all[i] for i in range(p)]
    delta = solve(Xtr)
    beta = jnp.stack([b0 + d for b0, d in zip(beta0, delta)], axis=-1)
    # |r − Xδ|² without another pass: the correction terms are tiny next to |r|², no cancellation
    rss = jnp.sum(resid * resid, axis=-1) - 2.0 * sum(d * x for d, x in zip(delta, Xtr)) \
        + sum(delta[i] * A[i][j] * delta[j] for i in range(p) for j in range(p))
    # diag((XᵀX)⁻¹) = column sums of squares of L⁻¹
    unit = [jnp.zeros_like(A[0][0])] * p
    var_unit = []
    Linv_cols = [_forward(L, [u if i != j else u + 1.0 for i, u in enumerate(unit)]) for j in range(p)]
    var_unit = jnp.stack([sum(v * v for v in col) for col in Linv_cols], axis=-1)
    nan = jnp.nan
    ok = full_rank[:, None]
    return (jnp.where(ok, beta, nan), jnp.where(ok, var_unit, nan),
            jnp.where(full_rank, jnp.maximum(rss, 0.0), nan), full_rank)


def _groups(frame: pd.DataFrame, group: tuple[str, ...]):
    """Level labels (R's order), rows per level, each level's first row in sorted order, and the
    sorting permutation of the rows (None when they are already grouped in level order)."""
    col = frame[group[0]]
    if len(group) == 1 and pd.api.types.is_integer_dtype(col) and not isinstance(col.dtype, pd.CategoricalDtype):
        v = col.to_numpy()
        if len(v) and np.all(v[1:] >= v[:-1]):     # already sorted: only the boundaries are needed
            starts = np.concatenate([[0], np.flatnonzero(v[1:] != v[:-1]) + 1])
            sizes = np.diff(np.concatenate([starts, [len(v)]]))
            return v[starts].astype(str).astype(object), sizes, starts, None
    codes, levels = factor_codes(col)
    for name in group[1:]:
        c2, l2 = factor_codes(frame[name])
        used, codes = np.unique(codes * len(l2) + c2, return_inverse=True)
        levels = np.array([level_label([levels[u // len(l2)], l2[u % len(l2)]]) for u in used], dtype=object)
    sizes = np.bincount(codes, minlength=len(levels))
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    order = None if np.all(codes[1:] >= codes[:-1]) else np.argsort(codes, kind="stable")
    return levels, sizes, starts, order


@with_timing
@float64
def lmlist(formula: str, data: pd.DataFrame, pool: bool = True) -> LmList:
    """One least-squares regression per group (lme4's lmList): `hj.lmlist("Reaction ~ Days | Subject", d)`.

    All groups are fitted at once (padded into a few size buckets). Standard errors use the residual
    sd pooled over the groups (`pool=True`, lmList's default) or each group's own (`pool=False`).
    Groups with fewer rows than coefficients or with collinear columns get NaN rows, are listed in
    `.failed` and reported in a warning; a group with exactly as many rows as coefficients gets
    coefficients, but no residual sd of its own. Rows with missing values in the used columns are
    dropped (with a warning). `timing`: the call's seconds, compile_s of them compiling, run_s the rest.
    """
    response, terms, group = parse_lmlist(formula)
    if not isinstance(data, pd.DataFrame):
        raise DesignError(f"data must be a pandas DataFrame, got {type(data).__name__}")
    used = list(dict.fromkeys(variables(response) + [v for a in terms.atoms for v in variables(a)] + list(group)))
    check_columns(used, data)
    plain = _plain_columns(terms, data)
    frame = data
    keep = None
    if data[used].isna().to_numpy().any():
        keep = data[used].notna().all(axis=1).to_numpy()
        warn(f"{int((~keep).sum())} row(s) with missing values in {', '.join(used)} were dropped")
        frame = data.loc[keep]
        plain = _plain_columns(terms, frame) if plain is not None else None
    y = response_values(response, frame)
    check_finite(y[:, None], [deparse(response)], frame.index)
    if plain is not None:
        columns, names = plain
        check_finite(np.column_stack([np.broadcast_to(c, len(frame)) for c in columns]), names, frame.index)
    else:
        X, spec = model_matrix(terms, frame)
        columns, names = [X[:, j] for j in range(X.shape[1])], list(spec.names)
    columns = columns + [y]
    levels, sizes, starts, order = _groups(frame, group)
    G, p = len(levels), len(names)
    beta, var_unit, rss, ok = (np.full((G, p), np.nan), np.full((G, p), np.nan), np.full(G, np.nan),
                               np.zeros(G, bool))
    lengths = np.array([bucket_length(s) for s in range(sizes.max() + 1)])[sizes]
    for length in np.unique(lengths):
        groups = np.flatnonzero(lengths == length)
        width = int(sizes[groups].max())
        W = _aligned_empty((len(groups), width, p + 1))   # [X y], filled column by column
        if order is None and np.all(sizes[groups] == width) and np.all(np.diff(groups) == 1):
            rows = slice(starts[groups[0]], starts[groups[0]] + width * len(groups))
            for j, col in enumerate(columns):
                W[..., j] = col if np.ndim(col) == 0 else col[rows].reshape(len(groups), width)
        else:
            pos = np.arange(width)[None, :]
            valid = pos < sizes[groups][:, None]
            idx = np.where(valid, starts[groups][:, None] + pos, 0)
            if order is not None:
                idx = order[idx]
            for j, col in enumerate(columns):
                W[..., j] = np.where(valid, col if np.ndim(col) == 0 else col[idx], 0.0)
        out = _ols_bucket(jax.device_put(W), jnp.asarray(sizes[groups]))
        beta[groups], var_unit[groups], rss[groups], ok[groups] = (np.asarray(a) for a in out)
    df = np.maximum(sizes - p, 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        sigma = np.where(ok & (df > 0), np.sqrt(rss / np.where(df > 0, df, 1)), np.nan)
        pooled = np.sqrt(np.sum(rss[ok]) / np.sum(df[ok])) if np.sum(df[ok]) > 0 else np.nan
        scale = np.full(G, pooled) if pool else sigma
        se = np.sqrt(var_unit) * scale[:, None]
    index = pd.Index(levels, name=":".join(group))
    reasons = np.where(sizes < p, f"fewer than {p} rows", "collinear columns within the group")
    failed = pd.Series(reasons[~ok], index=index[~ok], name="reason", dtype=object)
    if len(failed):
        shown = ", ".join(map(str, failed.index[:5])) + (", ..." if len(failed) > 5 else "")
        warn(f"{len(failed)} of {G} groups could not be fitted (NaN rows in the result): {shown}",
             BatchWarning)
    return LmList(pd.DataFrame(beta, index=index, columns=names), pd.DataFrame(se, index=index, columns=names),
                  pd.Series(sigma, index=index, name="sigma"), pd.Series(df, index=index, name="df_resid"),
                  pd.Series(sizes, index=index, name="nobs"), failed, float(pooled))
