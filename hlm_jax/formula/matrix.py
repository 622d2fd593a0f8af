"""Terms + data → a model matrix with R's column names and R's coding of factors.

A factor in a term is coded by treatment contrasts (first level as reference) when the term without
it is marginal to an earlier term (or is the intercept), otherwise by indicators; without an intercept
the first factor gets indicators (R's model.matrix rules). Interaction columns vary the first factor
fastest. `MatrixSpec.matrix(newdata)` rebuilds the same columns with the fit's levels and scalings.
"""
from __future__ import annotations

import difflib
import itertools
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from .sparse import issparse, scipy_sparse

from .parse import FormulaError, Name, bounded, deparse
from .terms import Terms, term_label
from .transforms import DesignError, evaluate, variables


@dataclass(frozen=True)
class MatrixSpec:
    """Everything needed to rebuild a model matrix on new data: terms, coding, learned transform states."""

    terms: Terms
    full: tuple[tuple[bool, ...], ...]
    names: tuple[str, ...]
    term_columns: dict = field(repr=False)
    states: dict = field(repr=False)

    @property
    def variables(self) -> list[str]:
        """Data columns the matrix reads."""
        return list(dict.fromkeys(v for a in self.terms.atoms for v in variables(a)))

    @bounded
    def matrix(self, frame: pd.DataFrame) -> np.ndarray:
        """The model matrix of `frame` with this spec's columns (factor levels from the fit)."""
        X, names, _ = _columns(self.terms, self.full, frame, self.states)
        if names != self.names:
            raise DesignError(f"the data give model-matrix columns {', '.join(names)}; "
                              f"the fit has {', '.join(self.names)}")
        return X


@bounded
def model_matrix(terms: Terms, frame: pd.DataFrame, sparse=False) -> tuple[np.ndarray, MatrixSpec]:
    """The model matrix of `terms` on `frame` (a scipy CSC matrix if `sparse`, or if `sparse(n, p)` is true
    for its n rows and p columns when it is a function) and the spec that rebuilds it (dense) on new data."""
    states: dict = {}
    blocks = {a: evaluate(a, frame, states) for a in terms.atoms}
    full = _coding(terms, {a: b.factor for a, b in blocks.items()})
    if callable(sparse):
        sparse = sparse(len(frame), int(terms.intercept) + sum(
            int(np.prod([blocks[a].width(f) for a, f in zip(term, coding)])) for term, coding in zip(terms.terms, full)))
    X, names, term_columns = _columns(terms, full, frame, states, blocks, sparse)
    check_finite(X, names, frame.index)
    return X, MatrixSpec(terms, full, names, term_columns, states)


def check_finite(X, names, index: pd.Index) -> None:
    """Model-matrix values that are inf or NaN (an inf in the data, the log of a value ≤ 0, ...) raise a
    DesignError naming the column and the rows."""
    if np.all(np.isfinite(X.data if issparse(X) else X)):
        return
    dense = X.tocsc() if issparse(X) else np.asarray(X)
    for j, name in enumerate(names):
        col = dense[:, [j]].toarray().ravel() if issparse(dense) else dense[:, j]
        bad = np.flatnonzero(~np.isfinite(col))
        if bad.size:
            rows = ", ".join(repr(r) for r in index[bad[:5]]) + (", ..." if bad.size > 5 else "")
            raise DesignError(f"column {name!r} is not finite ({col[bad[0]]}) in {bad.size} row(s): {rows}")


def _coding(terms: Terms, is_factor: dict) -> tuple[tuple[bool, ...], ...]:
    """Per term and atom: True where a factor is coded by indicators (R's TermCode)."""
    out, first_done = [], terms.intercept
    for k, term in enumerate(terms.terms):
        row = []
        for atom in term:
            rest = set(term) - {atom}
            marginal = not rest or any(rest <= set(earlier) for earlier in terms.terms[:k])
            full = is_factor[atom] and (not marginal or not first_done)
            first_done = first_done or is_factor[atom]
            row.append(full)
        out.append(tuple(row))
    return tuple(out)


def _columns(terms: Terms, full, frame: pd.DataFrame, states: dict, blocks: dict | None = None,
             sparse: bool = False):
    """Columns, their names, and each term's column indices."""
    if blocks is None:
        blocks = {a: evaluate(a, frame, states) for a in terms.atoms}
    ones = np.ones((len(frame), 1))
    sp = scipy_sparse() if sparse else None
    cols, names, term_columns = [], [], {}
    if terms.intercept:
        cols.append(sp.csc_matrix(ones) if sparse else ones)
        names.append("(Intercept)")
        term_columns["1"] = [0]
    for term, coding in zip(terms.terms, full):
        parts = [blocks[a].columns(f, sparse) for a, f in zip(term, coding)]
        start = len(names)
        # first atom varies fastest: iterate the last atom outermost
        for combo in itertools.product(*[range(p[0].shape[1]) for p in reversed(parts)]):
            idx = combo[::-1]
            names.append(":".join(p[1][j] for p, j in zip(parts, idx)))
            if not sparse:
                value = np.ones(len(frame))
                for (X, _), j in zip(parts, idx):
                    value = value * X[:, j]
                cols.append(value[:, None])
        if sparse:
            value = sp.csr_matrix(ones)
            for X, _ in parts:
                value = _row_kronecker(value, X.tocsr())
            cols.append(value.tocsc())
        term_columns[term_label(term)] = list(range(start, len(names)))
    if sparse:
        X = sp.hstack(cols, format="csc") if cols else sp.csc_matrix((len(frame), 0))
    else:
        X = np.hstack(cols) if cols else np.zeros((len(frame), 0))
    return X, tuple(names), term_columns


def _row_kronecker(A, B):
    """Row-wise Kronecker product of CSR matrices (n × a, n × b → n × ab), A's column varying fastest:
    the interaction columns of two sparse blocks, from the pairs of nonzeros that share a row."""
    rows_b = np.repeat(np.arange(B.shape[0]), np.diff(B.indptr))
    counts = A.indptr[rows_b + 1] - A.indptr[rows_b]
    owner = np.repeat(np.arange(rows_b.size), counts)
    within = np.arange(owner.size) - np.repeat(np.cumsum(counts) - counts, counts)
    a = A.indptr[rows_b][owner] + within
    cols = A.indices[a] + A.shape[1] * B.indices[owner]
    return scipy_sparse().csr_matrix((A.data[a] * B.data[owner], (rows_b[owner], cols)),
                                     shape=(A.shape[0], A.shape[1] * B.shape[1]))


def check_columns(names: list[str], data: pd.DataFrame) -> None:
    """Unknown columns raise DesignError with close matches; `x.attr` of a real column is attribute access."""
    columns = [str(c) for c in data.columns]
    for name in dict.fromkeys(names):
        if name in columns:
            continue
        head = name.split(".")[0]
        if "." in name and (head in columns or head in ("np", "numpy")):
            raise FormulaError(f"{name!r} is attribute access, which a formula does not allow "
                               f"(and {name!r} is not a column)")
        close = difflib.get_close_matches(name, columns, n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise DesignError(f"column {name!r} is not in the data{hint} (columns: {', '.join(columns)})")


@bounded
def response_values(node, frame: pd.DataFrame) -> np.ndarray:
    """The response: one numeric column or transform of columns; factors and several columns raise."""
    label = deparse(node)
    if isinstance(node, Name) and node.name in frame.columns:
        raw = frame[node.name]
        if not pd.api.types.is_numeric_dtype(raw) or raw.dtype == bool:
            raise DesignError(f"response {label!r} must be numeric, but its dtype is {raw.dtype}")
    block = evaluate(node, frame, {})
    if block.factor or block.values.shape[1] != 1:
        raise DesignError(f"response {label!r} must be one numeric column")
    return block.values[:, 0]
