"""The columns a formula reads, taken from a DataFrame once, without copying it.

`select` picks the named columns as pandas Series (the user's own while no row is dropped: nothing here
writes to them) and drops the rows with a missing value in any of them. The result, `Columns`, answers
what the formula's evaluation asks of a data frame (`frame[name]`, `frame.index`, `frame.columns`,
`len(frame)`), so a design is built without the DataFrame copies and row-wise reductions of pandas.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from .transforms import DesignError


class Columns:
    """Some columns of a DataFrame (Series by name) over the rows kept (`index`), read-only."""

    def __init__(self, series: dict, index: pd.Index):
        self._series, self.index = series, index

    def __getitem__(self, name: str) -> pd.Series:
        return self._series[name]

    def __len__(self) -> int:
        return len(self.index)

    @property
    def columns(self) -> list[str]:
        """The names of the columns held."""
        return list(self._series)


def missing(column: pd.Series) -> np.ndarray:
    """Where a column is missing (as pandas' isna): never for numpy integers and booleans, NaN for numpy floats."""
    kind = column.dtype.kind if isinstance(column.dtype, np.dtype) else None
    if kind in ("i", "u", "b"):
        return np.zeros(len(column), dtype=bool)
    if kind == "f":
        return np.isnan(column.to_numpy())
    return column.isna().to_numpy(dtype=bool)


def select(data: pd.DataFrame, names: list[str]) -> tuple[Columns, int]:
    """The named columns of `data` without the rows that have a missing value in any of them, and how many
    rows were dropped; a name that several columns share raises naming it."""
    series = {}
    for name in names:
        column = data[name]
        if not isinstance(column, pd.Series):
            raise DesignError(f"column {name!r} appears {column.shape[1]} times in the data; the columns a formula "
                              "reads must have unique names")
        series[name] = column
    drop = np.zeros(len(data), dtype=bool)
    for column in series.values():
        drop |= missing(column)
    n_dropped = int(drop.sum())
    if not n_dropped:
        return Columns(series, data.index), 0
    keep = ~drop
    return Columns({name: column[keep] for name, column in series.items()}, data.index[keep]), n_dropped
