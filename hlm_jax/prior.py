"""Prior weights and offsets (lme4's `weights=`, `offset=` and `offset(...)` terms) for lmer and glmer.

The formula's response and offset terms are parsed by the one formula parser and evaluated with its
numpy transforms. A weighted linear mixed model (residual variance σ²/w_i) with offset o is the
unweighted one on √w (y − o), √w X, √w Z; its −2 log-likelihood (and REML criterion) is the
transformed one minus Σ log w_i.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd

from .design import Design, DesignError
from .formula import FormulaError, check_columns, parse_formula, variables
from .formula.parse import Name
from .formula.transforms import numeric
from .messages import warn


def split_offsets(formula: str, response: str | None = None):
    """(the formula without its offset(...) terms, with the response replaced by `response` if given;
    the response's syntax-tree node, e.g. `cbind(s, f)`; the offset(...) nodes)."""
    parsed = parse_formula(formula)
    fixed = dataclasses.replace(parsed.fixed_terms, offsets=()).text
    plain = " + ".join([fixed] + [t.text for t in parsed.random])
    return f"{response or parsed.response} ~ {plain}", parsed.response_node, parsed.fixed_terms.offsets


def evaluate(node, frame: pd.DataFrame) -> np.ndarray:
    """An expression of columns (`size - incidence`, `log(t)`) evaluated on the data; logical → 0/1."""
    check_columns(variables(node), frame)
    if isinstance(node, Name) and frame[node.name].dtype == bool:
        return frame[node.name].to_numpy(float)
    return np.broadcast_to(np.asarray(numeric(node, frame, {}), dtype=float), (len(frame),)).copy()


def column_or_array(value, frame: pd.DataFrame, what: str) -> np.ndarray:
    """`weights=` or `offset=`: a numeric column's name, or one value per row of the data."""
    if isinstance(value, str):
        check_columns([value], frame)
        col = frame[value]
        if not pd.api.types.is_numeric_dtype(col):
            raise DesignError(f"{what} column {value!r} must be numeric, but its dtype is {col.dtype}")
        return col.to_numpy(float)
    arr = np.asarray(value, dtype=float).ravel()
    if arr.size != len(frame):
        raise DesignError(f"{what} has {arr.size} values; the data has {len(frame)} rows")
    return arr


def weights_and_offset(frame: pd.DataFrame, weights, offset, offset_nodes) -> tuple[np.ndarray, np.ndarray]:
    """Prior weights (1 when not given) and the summed offsets, one per row of `frame`."""
    w = np.ones(len(frame)) if weights is None else column_or_array(weights, frame, "weights")
    off = np.zeros(len(frame))
    for node in offset_nodes:
        if len(node.args) != 1:
            raise FormulaError(f"offset() takes one expression, got {len(node.args)}")
        off = off + evaluate(node.args[0], frame)
    if offset is not None:
        off = off + column_or_array(offset, frame, "offset")
    bad = np.isfinite(w) & (w < 0)
    if bad.any():
        raise DesignError(f"weights must be non-negative; row {frame.index[np.flatnonzero(bad)[0]]!r} has {w[bad][0]}")
    return w, off


def unique_rows(data: pd.DataFrame) -> pd.DataFrame:
    """The data with a unique row index (rows are matched back by label)."""
    if not isinstance(data, pd.DataFrame):
        raise DesignError(f"data must be a pandas DataFrame, got {type(data).__name__}")
    return data if data.index.is_unique else data.reset_index(drop=True)


def weighted_design(design: Design, w: np.ndarray, off: np.ndarray) -> Design:
    """The design of the transformed LMM: √w (y − o), √w X, √w Z (rows in the design's order)."""
    info = design.info
    s = np.sqrt(w)
    buckets = []
    for b in design.buckets:
        rows, mask = np.asarray(b.rows), np.asarray(b.mask)
        sb = s[rows] * mask
        buckets.append(dataclasses.replace(b, X=np.asarray(b.X) * sb[..., None], Z=np.asarray(b.Z) * sb[..., None],
                                           y=(info.y - off)[rows] * sb))
    factors = tuple(dataclasses.replace(f, Z=f.Z * s[:, None]) for f in info.factors)
    new_info = dataclasses.replace(info, X=info.X * s[:, None], y=(info.y - off) * s, factors=factors)
    return Design(tuple(buckets), new_info)


def drop_missing_prior(frame: pd.DataFrame, w: np.ndarray, off: np.ndarray):
    """Rows whose weight or offset is missing are dropped (with the other missing values, counted)."""
    ok = np.isfinite(w) & np.isfinite(off)
    if ok.all():
        return frame, w, off
    if not ok.any():
        raise DesignError("no rows left: every weight or offset is missing")
    warn(f"{int((~ok).sum())} row(s) with a missing weight or offset were dropped")
    return frame.loc[ok], w[ok], off[ok]
