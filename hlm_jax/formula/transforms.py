"""Evaluate the atoms of a parsed formula on a DataFrame: columns, arithmetic, and the fixed transforms.

Every operation is looked up in a fixed table (numpy functions); no user text is evaluated. Stateful
transforms (`scale`, `center`, `poly`, factor levels) learn their parameters from the fitting data
into `states` and reuse them on new data, so predictions use the fit's coding.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from .sparse import scipy_sparse

from .parse import NUMERIC, TRANSFORMS, BinOp, Call, FormulaError, Literal, Name, Neg, Num, Paren, deparse


class DesignError(ValueError):
    """Data that does not fit the formula; the message names the column or term at fault."""


@dataclass(frozen=True)
class Block:
    """An evaluated atom: numeric columns (n, k) with name suffixes, or a factor's codes (n,) and levels."""

    label: str
    values: np.ndarray
    suffixes: tuple[str, ...]
    factor: bool

    def width(self, full: bool) -> int:
        """How many columns `columns(full)` gives."""
        return len(self.suffixes) - (1 if self.factor and not full else 0)

    def columns(self, full: bool, sparse: bool = False) -> tuple[np.ndarray, tuple[str, ...]]:
        """Columns and names: numeric as is; a factor by treatment contrasts, or all indicators if `full`
        (`sparse`: a scipy CSC matrix, so a factor with thousands of levels costs one entry per row)."""
        if not self.factor:
            names = tuple(self.label + s for s in self.suffixes)
            return (scipy_sparse().csc_matrix(self.values) if sparse else self.values), names
        first = 0 if full else 1
        names = tuple(self.label + self.suffixes[k] for k in range(first, len(self.suffixes)))
        if sparse:
            rows = np.flatnonzero(self.values >= first)
            return scipy_sparse().csc_matrix((np.ones(rows.size), (rows, self.values[rows] - first)),
                                 shape=(len(self.values), len(names))), names
        X = (self.values[:, None] == np.arange(first, len(self.suffixes))[None, :]).astype(float)
        return X, names


def variables(node) -> list[str]:
    """The data columns a node reads, in order."""
    if isinstance(node, Name):
        return [node.name]
    if isinstance(node, Call):
        return [v for a in node.args[:1 if node.func == "poly" else None] for v in variables(a)]
    if isinstance(node, BinOp):
        return variables(node.left) + variables(node.right)
    if isinstance(node, (Paren, Neg)):
        return variables(node.inner if isinstance(node, Paren) else node.operand)
    return []


def evaluate(node, frame: pd.DataFrame, states: dict) -> Block:
    """One atom as a numeric or factor block; `states` holds learned parameters (filled when empty)."""
    label = deparse(node)
    kind = TRANSFORMS.get(node.func) if isinstance(node, Call) else None
    if kind == "factor" or isinstance(node, Name) and is_factor(frame[node.name]):
        codes, levels = _factor(node, frame, states)
        return Block(label, codes, tuple(levels), True)
    if kind == "poly":
        values, suffixes = _poly(node, frame, states)
        return Block(label, values, suffixes, False)
    values = np.broadcast_to(np.asarray(numeric(node, frame, states), dtype=float), (len(frame),))
    return Block(label, values[:, None], ("",), False)


def is_factor(values: pd.Series) -> bool:
    """Whether a column is coded as a factor: not numeric, or boolean."""
    if isinstance(values.dtype, np.dtype) and values.dtype.kind in "iufc":  # numpy numbers: the common case, quickly
        return False
    return not pd.api.types.is_numeric_dtype(values) or values.dtype == bool


def numeric(node, frame: pd.DataFrame, states: dict):
    """The value of an arithmetic node: a float array over the rows, or a scalar."""
    if isinstance(node, Num):
        return node.value
    if isinstance(node, Name):
        column = frame[node.name]
        if is_factor(column) and column.dtype != bool:
            raise DesignError(f"column {node.name!r} is not numeric (dtype {column.dtype}); "
                              f"it cannot be used in arithmetic")
        return column.to_numpy(dtype=float)
    if isinstance(node, Paren):
        return numeric(node.inner, frame, states)
    if isinstance(node, Neg):
        return -numeric(node.operand, frame, states)
    if isinstance(node, BinOp):
        a, b = numeric(node.left, frame, states), numeric(node.right, frame, states)
        with np.errstate(all="ignore"):
            return {"+": np.add, "-": np.subtract, "*": np.multiply, "/": np.divide,
                    "^": np.power}[node.op](np.asarray(a, dtype=float), b)
    if isinstance(node, Call):
        return _numeric_call(node, frame, states)
    raise FormulaError(f"{deparse(node)} cannot be used in arithmetic")


def _numeric_call(node: Call, frame: pd.DataFrame, states: dict):
    kind = TRANSFORMS.get(node.func)
    if kind in NUMERIC:
        with np.errstate(all="ignore"):
            return getattr(np, kind)(np.asarray(numeric(node.args[0], frame, states), dtype=float))
    if kind == "I":
        return numeric(node.args[0], frame, states)
    if kind in ("scale", "center"):
        x = np.broadcast_to(np.asarray(numeric(node.args[0], frame, states), dtype=float), (len(frame),))
        if node not in states:
            sd = x.std(ddof=1) if kind == "scale" and len(x) > 1 else 1.0
            if not sd > 0:
                raise DesignError(f"{deparse(node)}: the values do not vary, so they cannot be scaled")
            states[node] = (x.mean(), sd)
        mean, sd = states[node]
        return (x - mean) / sd
    raise FormulaError(f"{deparse(node)} gives {'a factor' if kind == 'factor' else 'several columns'}; "
                       "it cannot be used inside arithmetic")


def _factor(node, frame: pd.DataFrame, states: dict) -> tuple[np.ndarray, list[str]]:
    """Codes and levels of a factor atom: a column, or factor(expr)/C(expr) with optional levels=."""
    arg = node if isinstance(node, Name) else node.args[0]
    if isinstance(arg, Name):
        series = frame[arg.name]
    else:
        series = pd.Series(np.broadcast_to(numeric(arg, frame, states), (len(frame),)), index=frame.index)
    codes, labels = factor_codes(series)
    given = dict(node.kwargs).get("levels") if isinstance(node, Call) else None
    if node not in states:
        if given is None:
            states[node] = list(labels)
            return codes, list(labels)
        states[node] = [v if isinstance(v, str) else number_label(v) for v in given.value]
    levels = states[node]
    lookup = {lvl: i for i, lvl in enumerate(levels)}
    mapped = np.array([lookup.get(lbl, -1) for lbl in labels], dtype=np.int64)
    if np.any(mapped < 0):
        unseen = labels[np.flatnonzero(mapped < 0)[0]]
        raise DesignError(f"{deparse(node)} has level {unseen!r}, which is not among its levels "
                          f"({', '.join(levels)})")
    return mapped[codes], list(levels)


def _poly(node: Call, frame: pd.DataFrame, states: dict) -> tuple[np.ndarray, tuple[str, ...]]:
    """R's poly(x, degree): orthogonal polynomials (three-term recurrence, reusable on new data),
    or raw powers with raw=TRUE."""
    options = dict(node.kwargs)
    degree_node = node.args[1] if len(node.args) > 1 else options.get("degree", Num(1.0))
    raw_node = options.get("raw", Name("FALSE"))
    if not isinstance(degree_node, Num) or degree_node.value != int(degree_node.value) or degree_node.value < 1:
        raise FormulaError(f"{deparse(node)}: the degree must be a whole number ≥ 1")
    if raw_node not in (Name("TRUE"), Name("True"), Name("FALSE"), Name("False"), Num(0.0), Num(1.0)):
        raise FormulaError(f"{deparse(node)}: raw must be TRUE or FALSE")
    degree, raw = int(degree_node.value), raw_node in (Name("TRUE"), Name("True"), Num(1.0))
    x = np.broadcast_to(np.asarray(numeric(node.args[0], frame, states), dtype=float), (len(frame),))
    suffixes = tuple(str(k) for k in range(1, degree + 1))
    if node not in states:
        if len(np.unique(x)) <= degree:
            raise DesignError(f"{deparse(node)}: the degree must be less than the number of unique points")
        states[node] = (np.zeros(0), np.zeros(0)) if raw else _poly_coefficients(x, degree)
    if raw:
        return np.column_stack([x ** k for k in range(1, degree + 1)]), suffixes
    alpha, norm2 = states[node]
    Z = [np.ones_like(x), x - alpha[0]]
    for i in range(1, degree):
        Z.append((x - alpha[i]) * Z[i] - (norm2[i + 1] / norm2[i]) * Z[i - 1])
    return np.column_stack(Z[1:]) / np.sqrt(norm2[2:]), suffixes


def _poly_coefficients(x: np.ndarray, degree: int) -> tuple[np.ndarray, np.ndarray]:
    """R's poly() coefs: alpha (recurrence centres) and norm2 (1, then the squared norms)."""
    alpha, norm2 = [], [1.0]
    prev, cur = np.zeros_like(x), np.ones_like(x)
    for i in range(degree + 1):
        n2 = cur @ cur
        norm2.append(n2)
        if i == degree:
            break
        alpha.append((x * cur) @ cur / n2)
        prev, cur = cur, (x - alpha[-1]) * cur - (n2 / norm2[-2]) * prev
    return np.array(alpha), np.array(norm2)


def factor_codes(values: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Codes and string labels of a column used as a factor: categories in their own order,
    numbers sorted numerically, text sorted alphabetically (as R's factor()), FALSE/TRUE for booleans."""
    if isinstance(values.dtype, pd.CategoricalDtype):
        cats = np.asarray(values.cat.categories.astype(str), dtype=object)
        return values.cat.codes.to_numpy().astype(np.int64), cats
    if values.dtype == bool:
        return values.to_numpy().astype(np.int64), np.array(["FALSE", "TRUE"], dtype=object)
    if isinstance(values.dtype, np.dtype) and values.dtype.kind == "i" and len(values):  # integers: by counting
        v = values.to_numpy()
        lo, hi = int(v.min()), int(v.max())
        if hi - lo < 4 * len(v) + 1024:
            used, codes = used_codes(v.astype(np.int64) - lo, hi - lo + 1)
            return codes, np.array([str(lo + int(u)) for u in used], dtype=object)
    if pd.api.types.is_numeric_dtype(values):
        uniq, codes = np.unique(values.to_numpy(), return_inverse=True)
        labels = np.array([number_label(v) for v in uniq], dtype=object)
        return codes.astype(np.int64), labels
    codes, uniq = pd.factorize(values.astype(str))  # hashed in order of appearance, then the few levels sorted
    uniq = np.asarray(uniq, dtype=object)
    order = np.argsort(uniq, kind="stable")
    rank = np.empty(len(order), dtype=np.int64)
    rank[order] = np.arange(len(order))
    return rank[codes], uniq[order]


def used_codes(codes: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """np.unique(codes, return_inverse=True) for integer codes in [0, size), the inverse as int64: by counting
    when size is not much larger than the number of codes (linear time, no sort)."""
    if size > 4 * len(codes) + 1024:
        used, inverse = np.unique(codes, return_inverse=True)
        return used, inverse.astype(np.int64).reshape(-1)
    present = np.bincount(codes, minlength=size) > 0
    return np.flatnonzero(present), (np.cumsum(present) - 1)[codes]


def number_label(v) -> str:
    return str(int(v)) if float(v).is_integer() else repr(float(v))
