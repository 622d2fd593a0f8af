"""lmerTest's type III contrasts (get_contrasts_type3 / extract_contrasts_type3), ported exactly.

Each column of the over-parametrised design (every factor by all its indicators, lmerTest's rdX) is
written in the columns of X (treatment coding: the first level's indicator is 1 minus the others; a
column dropped as aliased by its coefficients on the kept ones), so L = (X⁺ rdX)ᵀ needs no data. From
the highest-order terms down, a term's columns of L are replaced by their residuals on the columns of
the terms that contain it (same variables and more, same numeric variables, counting only those R's
terms() codes 1); a term's contrast is then its columns of L at the rows named as X's columns.
"""
from __future__ import annotations

import itertools

import numpy as np

from .. import fixed
from ..design import NotYetSupportedError
from ..formula.parse import Call
from ..formula.terms import term_label


def type3_contrasts(info) -> dict[str, np.ndarray]:
    """Per term label (formula order, no intercept): lmerTest's type III contrast rows over X's columns."""
    spec = info.fixed_spec
    terms = list(spec.terms.terms)
    widths = _atom_widths(spec)
    columns = {frozenset(t): (t, spec.term_columns[term_label(t)], coding) for t, coding in zip(terms, spec.full)}
    if spec.terms.intercept:
        columns[frozenset()] = ((), [0], ())
    rd = [((), ())] if spec.terms.intercept else []
    rd += [(t, combo[::-1]) for t in terms
           for combo in itertools.product(*[range(widths[a][0]) for a in reversed(t)])]
    C = np.zeros((len(rd), len(spec.names)))
    for i, (t, levels) in enumerate(rd):
        for j, coef in _express(dict(zip(t, levels)), columns, widths).items():
            C[i, j] += coef
    kept = np.isin(np.array(spec.names), np.array(info.fixed_names))
    L = _zapsmall(C @ _kept_coefficients(info, kept).T)
    position = np.cumsum(kept) - 1
    cols = {term_label(t): [int(position[j]) for j in columns[frozenset(t)][1] if kept[j]] for t in terms}
    for t in sorted(terms, key=len, reverse=True):  # ties: neither contains the other
        above = [c for u in terms if _contains(t, u, terms, widths) for c in cols[term_label(u)]]
        if above:
            A, B = L[:, above], L[:, cols[term_label(t)]]
            L[:, cols[term_label(t)]] = _zapsmall(B - A @ np.linalg.lstsq(A, B, rcond=None)[0])
    where = {entry: i for i, entry in enumerate(rd)}
    rows = [where[entry] for entry, k in zip(_x_levels(columns, widths, len(spec.names)), kept) if k]
    out = {}
    for t in terms:
        Lt = L[rows][:, cols[term_label(t)]].T
        out[term_label(t)] = Lt[np.abs(Lt).sum(axis=1) > 1e-8]
    return out


def _kept_coefficients(info, kept: np.ndarray) -> np.ndarray:
    """M with X_all = X M (kept × all columns): identity on the kept ones, least-squares coefficients
    on the kept columns for the aliased (dropped) ones, which they reproduce exactly (R's ginv(X) X_all)."""
    M = np.zeros((int(kept.sum()), kept.size))
    M[:, kept] = np.eye(int(kept.sum()))
    if not kept.all():
        M[:, ~kept] = np.linalg.solve(fixed.gram(info.X), info.alias_gram)
    return M


def _atom_widths(spec) -> dict:
    """Per atom: (columns in the over-parametrised design, whether a factor, whether R calls it numeric)."""
    out = {}
    for t, coding in zip(spec.terms.terms, spec.full):
        levels = [len(spec.states[a]) if isinstance(spec.states.get(a), list) else None for a in t]
        numeric = [a for a, k in zip(t, levels) if k is None]
        rest = len(spec.term_columns[term_label(t)]) // int(np.prod(
            [k if full else k - 1 for k, full in zip(levels, coding) if k is not None]))
        if len(numeric) > 1 and rest != 1:
            raise NotYetSupportedError(f"type 3 tests of {term_label(t)}, an interaction of several "
                                       "multi-column numeric terms, are not computed yet")
        for a, k in zip(t, levels):
            plain = not (isinstance(a, Call) and a.func in ("poly", "scale"))  # R: class "nmatrix"
            out[a] = (k, True, False) if k is not None else (rest, False, plain)
    return out


def _contains(t, u, terms, widths) -> bool:
    """lmerTest's term_contain on R's terms "factors" matrix: u's variables coded 1 include t's and more,
    with the same numeric ones (a variable whose term lacks its margin is coded 2 and not counted)."""
    a, b = _coded_one(t, terms), _coded_one(u, terms)
    return a < b and {v for v in a if widths[v][2]} == {v for v in b if widths[v][2]}


def _coded_one(t, terms) -> set:
    """The variables of term t that R's terms() codes 1 (TermCode): the term without them is empty or
    contained in an earlier term."""
    earlier = [set(u) for u in terms[:terms.index(t)]]
    return {a for a in t if not set(t) - {a} or any(set(t) - {a} <= u for u in earlier)}


def _express(mono: dict, columns: dict, widths: dict) -> dict:
    """The product of indicator / numeric columns `mono` (atom → level or column) as X-column coefficients."""
    key = frozenset(mono)
    if key not in columns:
        raise NotYetSupportedError(f"type 3 tests need the term {':'.join(map(str, mono)) or '1'} (or its "
                                   "columns) in the model: the fixed effects are not hierarchical")
    term, cols, coding = columns[key]
    for a, full in zip(term, coding):
        if widths[a][1] and not full and mono[a] == 0:  # first level: 1 − the other indicators
            out = _express({b: v for b, v in mono.items() if b != a}, columns, widths)
            for m in range(1, widths[a][0]):
                for j, c in _express({**mono, a: m}, columns, widths).items():
                    out[j] = out.get(j, 0.0) - c
            return out
    return {cols[_offset(term, coding, mono, widths)]: 1.0}


def _offset(term, coding, mono, widths) -> int:
    """Position of a level combination among a term's X columns (first atom fastest)."""
    offset, stride = 0, 1
    for a, full in zip(term, coding):
        shift = 1 if widths[a][1] and not full else 0
        offset += (mono[a] - shift) * stride
        stride *= widths[a][0] - shift
    return offset


def _x_levels(columns: dict, widths: dict, p: int) -> list:
    """Per column of X: its term and the level (or numeric column) of each of the term's variables."""
    out = [None] * p
    for term, cols, coding in columns.values():
        for k, j in enumerate(cols):
            levels = []
            for a, full in zip(term, coding):
                shift = 1 if widths[a][1] and not full else 0
                n = widths[a][0] - shift
                levels.append(k % n + shift)
                k //= n
            out[j] = (term, tuple(levels))
    return out


def _zapsmall(x: np.ndarray, digits: int = 7) -> np.ndarray:
    """R's zapsmall: round to `digits` significant digits of the largest magnitude."""
    mx = np.abs(x).max() if x.size else 0.0
    return np.round(x, max(0, digits - int(np.ceil(np.log10(mx)))) if mx > 0 else digits)
