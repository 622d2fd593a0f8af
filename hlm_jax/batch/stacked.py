"""Multi-factor statistics of several data sets brought to one shape, so that one batched program fits them all.

Each data set has its own levels and cross-tabulation. Padding with empty levels is exact: a level with
no rows has zero statistics, so its block of A = ΛᵀZᵀZΛ + I is the identity (log-determinant 0, no
coupling), and a zero cross entry adds nothing to Z₂ᵀZ₁. The first factor's slots, each other factor's
levels (its block of the dense part) and the sparse cross entries and pairs are padded to the largest.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from ..likelihood import crossed
from ..likelihood.lmm import Stats


FIRST = ("ZtZ", "ZtX", "Zty", "XtX", "Xty", "yty", "n")


def _pad(a: np.ndarray, length: int, axis: int = 0) -> np.ndarray:
    """`a` with zeros appended along `axis` up to `length`."""
    widths = [(0, 0)] * a.ndim
    widths[axis] = (0, length - a.shape[axis])
    return np.pad(a, widths)


def _pad_first(first: Stats, slots: int) -> Stats:
    return dataclasses.replace(first, **{name: _pad(np.asarray(getattr(first, name)), slots) if i < 3
                                         else np.asarray(getattr(first, name)) for i, name in enumerate(FIRST)})


def _pad_dense(stats: crossed.CrossedStats, rows: np.ndarray, Q2: int, slots: int, dense: bool):
    """cross_dense and pair_dense with their rows moved to `rows` and the first factor padded to `slots`."""
    if not dense:
        return np.zeros((0, 0)), np.zeros((0, 0))
    n_slots, q1 = np.asarray(stats.first.ZtZ).shape[:2]
    cross = np.zeros((Q2, slots, q1))
    cross[rows] = np.asarray(stats.cross_dense).reshape(stats.Q2, n_slots, q1)
    pairs = np.zeros((slots, q1, q1, Q2, Q2))
    old = np.asarray(stats.pair_dense).reshape(n_slots, q1, q1, stats.Q2, stats.Q2)
    pairs[:n_slots, :, :, rows[:, None], rows[None, :]] = old
    return cross.reshape(Q2, -1), pairs.reshape(slots * q1 * q1, Q2 * Q2)


def pad_to(stats: crossed.CrossedStats, levels: list[int], slots: int, entries: int, pairs: int,
           dense: bool) -> crossed.CrossedStats:
    """`stats` with each other factor at levels[k] levels, the first at `slots` slots, and `entries` cross
    entries and `pairs` pairs (the added ones zero)."""
    rows = _moved_rows(stats.blocks, levels)
    Q2 = int(sum(n * b[2] for n, b in zip(levels, stats.blocks)))
    Z2tZ2 = np.zeros((Q2, Q2))
    Z2tZ2[rows[:, None], rows[None, :]] = np.asarray(stats.Z2tZ2)
    Z2tX = np.zeros((Q2, np.asarray(stats.Z2tX).shape[1]))
    Z2tX[rows] = np.asarray(stats.Z2tX)
    Z2ty = np.zeros(Q2)
    Z2ty[rows] = np.asarray(stats.Z2ty)
    offsets = np.cumsum([0] + [n * b[2] for n, b in zip(levels, stats.blocks)])
    blocks = tuple((int(offsets[k]), int(n), q, s) for k, (n, (_, _, q, s)) in enumerate(zip(levels, stats.blocks)))
    index = {name: _pad(rows[np.asarray(getattr(stats, name))], pairs if name.startswith("pair") else entries)
             for name in ("cross_row", "pair_row_a", "pair_row_b")}
    return crossed.CrossedStats(
        _pad_first(stats.first, slots), Z2tZ2, Z2tX, Z2ty, index["cross_row"].astype(np.int32),
        _pad(np.asarray(stats.cross_group), entries).astype(np.int32), _pad(np.asarray(stats.cross_val), entries),
        index["pair_row_a"].astype(np.int32), index["pair_row_b"].astype(np.int32),
        _pad(np.asarray(stats.pair_group), pairs).astype(np.int32), _pad(np.asarray(stats.pair_val), pairs),
        *_pad_dense(stats, rows, Q2, slots, dense), blocks=blocks)


def _moved_rows(blocks: tuple, levels: list[int]) -> np.ndarray:
    """New position of each dense-part row of `blocks` when factor k is given levels[k] ≥ its levels."""
    starts = np.cumsum([0] + [n * b[2] for n, b in zip(levels, blocks)])
    return np.concatenate([starts[k] + np.arange(n * q) for k, (_, n, q, _) in enumerate(blocks)]).astype(np.int64)


def stack(all_stats: list[crossed.CrossedStats]) -> crossed.CrossedStats:
    """The data sets' statistics padded to one shape and stacked along a leading problem axis."""
    levels = [max(s.blocks[k][1] for s in all_stats) for k in range(len(all_stats[0].blocks))]
    slots = max(np.asarray(s.first.ZtZ).shape[0] for s in all_stats)
    entries = max(np.asarray(s.cross_row).size for s in all_stats)
    pairs = max(np.asarray(s.pair_row_a).size for s in all_stats)
    dense = all(np.asarray(s.cross_dense).size for s in all_stats)
    padded = [pad_to(s, levels, slots, entries, pairs, dense) for s in all_stats]
    first = Stats(*(np.stack([np.asarray(getattr(p.first, name)) for p in padded]) for name in FIRST),
                  structure=padded[0].first.structure)
    names = [f.name for f in dataclasses.fields(crossed.CrossedStats) if f.name not in ("first", "blocks")]
    rest = {name: np.stack([np.asarray(getattr(p, name)) for p in padded]) for name in names}
    return crossed.CrossedStats(first, **rest, blocks=padded[0].blocks)
