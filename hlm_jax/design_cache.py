"""Recently built designs, reused while the data they were built from are unchanged.

Building a design (parsing, model matrices, padding) costs more than fitting a small model, and
users refit the same formula to the same data with other options (another residual structure, REML
or ML). An entry remembers the data's index and a copy of each column the design read (values and
dtype, so also a factor's levels); it is reused only when all of them are equal again, so an edited
DataFrame (or another one) is rebuilt. Builds that warned are not kept, so their warnings are
never lost on a later call.
"""
from __future__ import annotations

import threading
import warnings
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class Snapshot:
    """A DataFrame's index and the dtypes and values of some of its columns."""

    index: pd.Index
    columns: tuple[tuple[str, object, np.ndarray], ...]

    def matches(self, data: pd.DataFrame) -> bool:
        """Whether `data` has the same index and the same dtypes and values in these columns."""
        if not data.index.equals(self.index):
            return False
        for name, dtype, values in self.columns:
            if name not in data.columns:
                return False
            column = data[name]
            if not isinstance(column, pd.Series) or column.dtype != dtype:
                return False
            now = column_values(column)
            if not (np.array_equal(now, values) or (values.dtype.kind in "fc" and np.array_equal(now, values, True))):
                return False
        return True


def column_values(column: pd.Series) -> np.ndarray:
    """A column's values as numpy compares them (a categorical's codes, not its labels)."""
    if isinstance(column.dtype, pd.CategoricalDtype):
        return column.cat.codes.to_numpy()
    return column.to_numpy()


def snapshot(data: pd.DataFrame, columns) -> Snapshot:
    """Copies of what a design built from `columns` of `data` depends on."""
    return Snapshot(data.index.copy(), tuple((c, data[c].dtype, np.array(column_values(data[c]), copy=True))
                                             for c in dict.fromkeys(columns)))


class DesignCache:
    """The last `size` builds, one per key (formula and options), each with the snapshot it was built from;
    data whose read columns exceed `max_bytes` are not kept (their design would hold as much again).
    One lock serialises lookups and builds (the warnings a build records are process-wide)."""

    def __init__(self, size: int = 8, max_bytes: int = 2 ** 28):
        self.size, self.max_bytes = size, max_bytes
        self.entries: OrderedDict = OrderedDict()
        self.lock = threading.Lock()

    def get(self, key, data: pd.DataFrame, build: Callable[[], tuple[object, list]]):
        """The value for `data`: the entry for `key` while it matches `data`, else `build()`'s value
        (`build` returns the value and the columns of `data` it read)."""
        with self.lock:
            entry = self.entries.get(key)
            if entry is not None and entry[0].matches(data):
                self.entries.move_to_end(key)
                return entry[1]
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                value, columns = build()
            for w in caught:
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
            if not caught and all(isinstance(data.get(c), pd.Series) for c in columns):
                kept = snapshot(data, columns)
                if sum(values.nbytes for _, _, values in kept.columns) <= self.max_bytes:
                    self.entries[key] = (kept, value)
                    self.entries.move_to_end(key)
                while len(self.entries) > self.size:
                    self.entries.popitem(last=False)
            return value

    def clear(self) -> None:
        with self.lock:
            self.entries.clear()
