"""DataFrame + parsed formula → `Design`: padded per-group tensors and the metadata to read them.

Rows are grouped by the levels of the (first) grouping factor and padded into
size buckets (lengths 2^k or 1.5·2^k, as is the number of groups per bucket), so
padding waste stays bounded even when group sizes are very unequal. The tensors are a JAX pytree; everything needed
to name, label and map results back to rows lives in the static `DesignInfo`.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import jax
import numpy as np
import pandas as pd

from . import fixed
from .formula import (Call, Columns, DesignError, FormulaError, ParsedFormula, RandomTerm, check_columns, factor_codes,
                      model_matrix, parse_formula, response_values, select, used_codes)
from .formula.sparse import issparse, scipy_sparse
from .messages import warn


class NotYetSupportedError(NotImplementedError):
    """A model the library recognises but does not fit yet."""


@jax.tree_util.register_dataclass
@dataclass(frozen=True)
class GroupBucket:
    """Groups padded to a common length `n_b`: X (G_b, n_b, p), Z (G_b, n_b, q), y and mask (G_b, n_b).

    `group` gives each row of the bucket its group index (padding groups point at
    a dummy group whose statistics are all zero); `rows` (G_b, n_b) gives each cell's
    row in the data (0 in padding cells), so another response can be padded alike.
    """

    X: jax.Array
    Z: jax.Array
    y: jax.Array
    mask: jax.Array
    group: jax.Array
    rows: jax.Array


@dataclass(frozen=True)
class ReTerm:
    """One random-effects term after expansion: its grouping factor and Z columns.

    `block` is the index of its factor block and `offset` its first column there; `covariance`
    names its covariance structure (a key of `model.covariance.STRUCTURES`).
    """

    factor: str
    columns: tuple[str, ...]
    n_levels: int
    block: int = 0
    offset: int = 0
    covariance: str = "us"

    @property
    def q(self) -> int:
        return len(self.columns)


def term_group_names(terms: tuple[ReTerm, ...]) -> list[str]:
    """lme4's group name of each term: the factor, then `factor.1`, `factor.2` for further terms on it."""
    names, seen = [], {}
    for t in terms:
        count = seen.get(t.factor, 0)
        seen[t.factor] = count + 1
        names.append(t.factor if count == 0 else f"{t.factor}.{count}")
    return names


@dataclass(frozen=True)
class FactorBlock:
    """All random terms on one grouping factor: its levels, each row's level code, and Z (n × q)."""

    name: str
    group: tuple[str, ...]
    levels: np.ndarray
    codes: np.ndarray
    Z: np.ndarray
    specs: tuple = field(repr=False)

    @property
    def q(self) -> int:
        return self.Z.shape[1]

    @property
    def n_levels(self) -> int:
        return len(self.levels)


@dataclass
class DesignInfo:
    """Static description of a design: names, levels and row-level matrices for results.

    `factors[0]` is the factor with most levels: its rows are padded into the per-group
    buckets. The shortcuts `factor`, `levels`, `group_codes`, `Z` refer to it.
    """

    formula: str
    parsed: ParsedFormula
    response: str
    fixed_names: tuple[str, ...]
    dropped_fixed: tuple[str, ...]
    terms: tuple[ReTerm, ...]
    factors: tuple[FactorBlock, ...]
    X: np.ndarray
    y: np.ndarray
    row_index: pd.Index
    n_dropped_missing: int
    fixed_spec: object = field(repr=False)
    fixed_terms: tuple[str, ...] = ()
    fixed_assign: np.ndarray | None = field(default=None, repr=False)
    unidentified: tuple[str, ...] = ()
    alias_gram: np.ndarray | None = field(default=None, repr=False)  # X_keptᵀ X_dropped (type III tests)

    @property
    def sparse(self) -> bool:
        """Whether X is kept sparse (the wide path: no per-group padding of X)."""
        return issparse(self.X)

    @property
    def nobs(self) -> int:
        return len(self.y)

    @property
    def p(self) -> int:
        return self.X.shape[1]

    @property
    def factor(self) -> str:
        return self.factors[0].name

    @property
    def levels(self) -> np.ndarray:
        return self.factors[0].levels

    @property
    def group_codes(self) -> np.ndarray:
        return self.factors[0].codes

    @property
    def Z(self) -> np.ndarray:
        return self.factors[0].Z

    @property
    def n_groups(self) -> int:
        return self.factors[0].n_levels

    @property
    def q(self) -> int:
        return self.factors[0].q

    @property
    def random_specs(self) -> tuple:
        return self.factors[0].specs


@jax.tree_util.register_dataclass
@dataclass(frozen=True)
class Design:
    """Padded per-group tensors of one model (a pytree) plus its static `info`."""

    buckets: tuple[GroupBucket, ...]
    info: DesignInfo = field(metadata=dict(static=True))


# The wide (sparse) path: X stays a sparse matrix and the sufficient statistics are sums over rows
# (`fixed.group_sums`), with no per-group padding of X. It is taken when X has more than
# SPARSE_COLUMNS columns or a dense copy of X would exceed SPARSE_BYTES; below that the padded
# per-group tensors are built (they also serve the batched programs).
SPARSE_COLUMNS = 64
SPARSE_BYTES = 2 ** 28


def uses_sparse_path(n: int, p: int) -> bool:
    """Whether an n × p fixed-effects matrix takes the sparse path (see SPARSE_COLUMNS)."""
    return p > SPARSE_COLUMNS or 8 * n * p > SPARSE_BYTES


def model_frame(parsed: ParsedFormula, data: pd.DataFrame) -> tuple[Columns, int, np.ndarray]:
    """The used columns without rows that have missing values, how many rows were dropped, and y."""
    if isinstance(parsed.response_node, Call) and parsed.response_node.func == "cbind":
        raise FormulaError(f"a {parsed.response} response is not supported by lmer yet (binomial models need glmer)")
    if parsed.fixed_terms.offsets:
        raise FormulaError(f"{', '.join(map(str, (o.func for o in parsed.fixed_terms.offsets)))}(...) in a formula "
                           "is not supported by lmer yet")
    if not isinstance(data, pd.DataFrame):
        raise DesignError(f"data must be a pandas DataFrame, got {type(data).__name__}")
    used = _used_columns(parsed, data)
    frame, n_dropped = _drop_missing(data, used)
    return frame, n_dropped, _response(parsed, frame)


def build_design(formula: str, data: pd.DataFrame, sparse: bool | None = None) -> Design:
    """Parse `formula`, check `data` against it, and pad the rows into per-group tensors
    (`sparse=None` chooses the sparse path by size; True/False force it)."""
    parsed = parse_formula(formula)
    frame, n_dropped, y = model_frame(parsed, data)
    part = fixed_part(parsed, frame)
    terms, factors = _random_blocks(parsed, frame)
    _warn_if_labels_look_nested(factors, frame)
    unidentified = _unidentified_factors(part.X, factors, part.chol)
    first = factors[0]
    wide = uses_sparse_path(*part.X.shape) if sparse is None else sparse
    X = scipy_sparse().csr_matrix(part.X) if wide else (part.X.toarray() if issparse(part.X) else part.X)
    buckets = () if wide else _pad_into_buckets(X, first.Z, y, first.codes, first.n_levels)
    info = DesignInfo(formula, parsed, parsed.response, part.names, part.dropped, terms, factors,
                      X, y, frame.index, n_dropped, part.spec, part.terms, part.assign, unidentified,
                      part.alias_gram)
    return Design(buckets, info)


def _used_columns(parsed: ParsedFormula, data: pd.DataFrame) -> list[str]:
    """Every data column the formula reads; unknown names raise with close matches."""
    check_columns(parsed.variables, data)
    return parsed.variables


def _drop_missing(data: pd.DataFrame, used: list[str]) -> tuple[Columns, int]:
    """The used columns (not copied) without rows that have a missing value; warns with the count."""
    frame, n_dropped = select(data, used)
    if n_dropped:
        warn(f"{n_dropped} row(s) with missing values in {', '.join(used)} were dropped")
    if len(frame) == 0:
        raise DesignError("no rows left after dropping rows with missing values")
    return frame, n_dropped


def _response(parsed: ParsedFormula, frame: Columns) -> np.ndarray:
    """The response as a float array of its own (not a view of the user's column)."""
    y = np.array(response_values(parsed.response_node, frame), dtype=float)
    if not np.all(np.isfinite(y)):
        bad = int(np.flatnonzero(~np.isfinite(y))[0])
        raise DesignError(f"response {parsed.response!r} is not finite at row {frame.index[bad]!r}")
    return y


def _model_matrix(terms, frame: Columns, what: str, sparse=False):
    """The model matrix of `terms` (a `formula.Terms`), its R column names and its `MatrixSpec`."""
    try:
        X, spec = model_matrix(terms, frame, sparse)
    except DesignError as exc:
        raise DesignError(f"the {what} model matrix: {exc}") from None
    return X, spec.names, spec


@dataclass(frozen=True)
class FixedPart:
    """The fixed-effects matrix with aliased columns dropped: X (n × p; sparse CSC when wide, see
    `uses_sparse_path`), R's names, the dropped names, R's term labels (`(Intercept)` first when present),
    each kept column's term index (`assign`), its spec, X_keptᵀX_dropped and the Cholesky factor of X_keptᵀX_kept."""

    X: object
    names: tuple[str, ...]
    dropped: tuple[str, ...]
    terms: tuple[str, ...]
    assign: np.ndarray
    spec: object
    alias_gram: np.ndarray
    chol: np.ndarray  # the upper Cholesky factor of XᵀX (kept columns)


def fixed_part(parsed: ParsedFormula, frame: Columns) -> FixedPart:
    """X with aliased columns dropped (counted and named in a warning), as lme4 and lm do (see `fixed`)."""
    X, names, spec = _model_matrix(parsed.fixed_terms, frame, "fixed-effects", sparse=uses_sparse_path)
    labels = list(spec.term_columns)
    assign = np.zeros(len(names), dtype=np.int64)
    for k, cols in enumerate(spec.term_columns.values()):
        assign[cols] = k
    G = fixed.gram(X)
    kept = fixed.kept_columns(G)
    keep = kept.mask
    dropped = tuple(n for n, k in zip(names, keep) if not k)
    if dropped:
        warn(fixed.dropped_message(dropped))
    if not np.any(keep):
        raise DesignError(f"the fixed part {parsed.fixed!r} leaves no fixed-effect column; models without fixed "
                          "effects (y ~ 0 + (1 | g)) are not supported yet")
    terms = tuple("(Intercept)" if t == "1" else t for t in labels)
    return FixedPart(X[:, keep], tuple(n for n, k in zip(names, keep) if k), dropped, terms, assign[keep], spec,
                     G[np.ix_(keep, ~keep)], kept.R)


def _group_codes(frame: Columns, group: tuple[str, ...], name: str) -> tuple[np.ndarray, np.ndarray]:
    """Integer codes and labels of the grouping factor `name` (the interaction of the `group`
    columns), levels sorted as R's factor() sorts them and unused combinations dropped."""
    combined, size, label_parts = np.zeros(len(frame), dtype=np.int64), 1, []
    for col in group:
        codes, labels = factor_codes(frame[col])
        combined = combined * len(labels) + codes
        size *= len(labels)
        label_parts.append(labels)
    used, inverse = used_codes(combined, size)
    columns = []
    for labels in reversed(label_parts):  # the used combinations' codes, last column first
        used, codes = np.divmod(used, len(labels))
        columns.append(labels[codes])
    levels = np.array([level_label(parts) for parts in zip(*columns[::-1])], dtype=object)
    if len(levels) < 2:
        raise DesignError(f"grouping factor {name!r} has a single level ({levels[0]!r}); "
                          "a random effect needs at least two groups")
    return inverse, levels


def factor_labels(frame: pd.DataFrame, group: tuple[str, ...]) -> list[str]:
    """Each row's level label of the interaction of the `group` columns (as `_group_codes` names levels)."""
    parts = []
    for col in group:
        codes, labels = factor_codes(frame[col])
        parts.append(labels[codes])
    return [level_label(p) for p in zip(*parts)]


def level_label(parts) -> str:
    """A level of an interaction a:b: its factors' labels joined by ':' (as R writes them); a label that has a
    ':' of its own is backquoted, so that 'x:y' with 'z' and 'x' with 'y:z' stay two levels."""
    return ":".join(f"`{p}`" if ":" in p else p for p in parts)


def _random_blocks(parsed: ParsedFormula, frame: Columns):
    """Random terms in lme4's order (decreasing number of levels, `||` split per column) and one
    `FactorBlock` per grouping factor, the factor with most levels first."""
    codes = {}
    pieces = []
    for t in parsed.random:
        if t.group_name not in codes:
            codes[t.group_name] = (t.group, *_group_codes(frame, t.group, t.group_name))
        Zt, names, spec = _model_matrix(t.terms, frame, f"random-effects ({t.expr} | {t.group_name})")
        if Zt.shape[1] == 0:
            raise DesignError(f"random term ({t.expr} | {t.group_name}) has no columns")
        split = [(i,) for i in range(len(names))] if not t.correlated else [tuple(range(len(names)))]
        pieces += [(t.group_name, tuple(names[i] for i in cols), Zt[:, list(cols)], (spec, cols), t.covariance)
                   for cols in split]
    pieces.sort(key=lambda piece: -len(codes[piece[0]][2]))  # stable, as lme4's ordering
    order = list(dict.fromkeys(piece[0] for piece in pieces))
    terms, factors = [], []
    for block, name in enumerate(order):
        mine = [piece for piece in pieces if piece[0] == name]
        group, row_codes, levels = codes[name]
        factors.append(FactorBlock(name, group, levels, row_codes, np.column_stack([m[2] for m in mine]),
                                   tuple(m[3] for m in mine)))
    offsets = {name: 0 for name in order}
    for name, columns, _, _, covariance in pieces:
        terms.append(ReTerm(name, columns, len(codes[name][2]), order.index(name), offsets[name], covariance))
        offsets[name] += len(columns)
    return tuple(terms), tuple(factors)


def _unidentified_factors(X, factors: tuple[FactorBlock, ...], chol: np.ndarray) -> tuple[str, ...]:
    """Grouping factors whose Z lies in the span of X (checked for those with few columns; `chol`: the
    Cholesky factor of XᵀX): the REML/ML criterion is flat in their variance, which is reported as 0 (with
    a warning naming the term)."""
    out = []
    for f in factors:
        if _more_levels_than_columns(f, X.shape[1]):
            continue
        if f.n_levels * f.q <= fixed.SPAN_CHECK_COLUMNS and fixed.in_fixed_span(X, f.Z, f.codes, f.n_levels, chol):
            warn(
                f"the variance of the random effects on {f.name!r} is not identified: every column of their Z "
                f"lies in the span of the fixed effects (each level of {f.name!r} is a combination of fixed-effect "
                "columns, e.g. a factor nested in it), so the criterion is flat in it; it is reported as 0, where "
                "the fixed effects and sigma are the same as at any other value")
            out.append(f.name)
    return tuple(out)


def _more_levels_than_columns(f: FactorBlock, p: int) -> bool:
    """Whether more than p levels have a nonzero row in Z: their columns have disjoint rows, so they are
    linearly independent and cannot all lie in the span of p fixed-effect columns (no check needed)."""
    return np.count_nonzero(np.bincount(f.codes[np.any(f.Z != 0, axis=1)], minlength=f.n_levels)) > p


def _warn_if_labels_look_nested(factors: tuple[FactorBlock, ...], frame: Columns) -> None:
    """Warn when an inner factor's labels repeat across an outer factor's levels, filling most of
    the cross table with several rows per cell: `(1|school) + (1|class)` where class "1" exists in
    every school, and `(1|school/class)` was probably meant."""
    singles = [f for f in factors if len(f.group) == 1]
    for inner in singles:
        for outer in singles:
            if inner is outer or inner.n_levels >= outer.n_levels:
                continue
            cells = np.unique(inner.codes * outer.n_levels + outer.codes).size
            fill = cells / (inner.n_levels * outer.n_levels)
            if cells > inner.n_levels and fill >= 0.5 and len(frame) / cells >= 2:
                warn(f"labels of {inner.name!r} repeat across levels of {outer.name!r} ({inner.n_levels} labels "
                     f"in {cells} {inner.name}-{outer.name} combinations) and the formula treats them as crossed; "
                     f"if each {inner.name} belongs to one {outer.name}, write (1 | {outer.name}/{inner.name})")


def bucket_length(n: int) -> int:
    """The next power of two ≥ n (group slots of the statistics: few shapes, so compiled programs are reused)."""
    return 1 << max(int(n) - 1, 0).bit_length()


def padded_length(n: int) -> int:
    """Padded size for n rows (or groups) of a bucket: the next of 1, 2, 3, 4, 6, 8, 12, 16, 24, ...
    (2^k and 1.5·2^k), so padding wastes less than 1.5x per axis while shapes stay few."""
    power = bucket_length(n)
    return power * 3 // 4 if power >= 4 and n <= power * 3 // 4 else power


def _pad_into_buckets(X, Z, y, codes, n_groups) -> tuple[GroupBucket, ...]:
    """Rows sorted by group, groups padded to `padded_length` rows, one bucket per length: every cell's row is
    placed at once, and X, Z and y are each gathered once for all buckets (padding cells read a zero row)."""
    n = len(y)
    sizes = np.bincount(codes, minlength=n_groups)
    distinct, which = np.unique(sizes, return_inverse=True)
    lengths = np.array([padded_length(s) for s in distinct], dtype=np.int64)[which]
    ladder, bucket = np.unique(lengths, return_inverse=True)  # each group's bucket, by increasing length
    counts = np.bincount(bucket, minlength=len(ladder))
    slots = np.array([padded_length(c) for c in counts], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(slots * ladder)])
    by_bucket = np.argsort(bucket, kind="stable")
    slot = np.empty(n_groups, dtype=np.int64)  # a group's place in its bucket, in group order
    slot[by_bucket] = np.arange(n_groups) - np.repeat(np.cumsum(counts) - counts, counts)
    order = np.argsort(codes, kind="stable")
    sorted_codes = codes[order]
    within = np.arange(n) - (np.cumsum(sizes) - sizes)[sorted_codes]  # row's place in its group
    gather = np.full(offsets[-1], n, dtype=np.int64)
    gather[offsets[bucket[sorted_codes]] + slot[sorted_codes] * lengths[sorted_codes] + within] = order
    real = gather < n
    cells = [np.concatenate([A, np.zeros((1,) + A.shape[1:])])[gather] for A in (X, Z, y)]
    mask, rows = real.astype(float), np.where(real, gather, 0)
    buckets = []
    for b, (length, n_slots) in enumerate(zip(ladder, slots)):
        cut, shape = slice(offsets[b], offsets[b + 1]), (int(n_slots), int(length))
        group = np.full(n_slots, n_groups, dtype=np.int32)  # padding slots → dummy group
        group[:counts[b]] = by_bucket[np.cumsum(counts)[b] - counts[b]:np.cumsum(counts)[b]]
        Xb, Zb, yb = (c[cut].reshape(shape + c.shape[1:]) for c in cells)
        buckets.append(GroupBucket(Xb, Zb, yb, mask[cut].reshape(shape), group, rows[cut].reshape(shape)))
    return tuple(buckets)


def with_response(design: Design, y: np.ndarray) -> Design:
    """The same design with another response vector (one value per used row, in row order)."""
    y = np.asarray(y, dtype=float)
    if y.shape != design.info.y.shape:
        raise DesignError(f"response has {y.size} values; the design has {design.info.nobs} rows")
    buckets = tuple(dataclasses.replace(b, y=y[np.asarray(b.rows)] * np.asarray(b.mask)) for b in design.buckets)
    return Design(buckets, dataclasses.replace(design.info, y=y))


def padding_waste(design: Design) -> float:
    """Padded cells per real row (1.0 means no padding)."""
    cells = sum(b.mask.size for b in design.buckets)
    return cells / design.info.nobs
