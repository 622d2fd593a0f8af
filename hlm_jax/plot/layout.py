"""Shared layout rules of the figures: panel grids, thinned tick labels, the factor to draw."""
from __future__ import annotations

import math

import matplotlib.pyplot as plt
import numpy as np

PANEL = 3.2  # inches per panel side


def panels(n: int, ncols: int | None = None, axes=None, height: float = PANEL, width: float = PANEL):
    """(figure, flat list of n axes): a near-square grid, or the caller's axes (one per panel)."""
    if axes is not None:
        flat = list(np.ravel(axes)) if np.iterable(axes) else [axes]
        if len(flat) != n:
            raise ValueError(f"this figure draws {n} panel(s); got {len(flat)} axes")
        return flat[0].figure, flat
    ncols = ncols or min(n, math.ceil(math.sqrt(n)))
    nrows = math.ceil(n / ncols)
    fig, grid = plt.subplots(nrows, ncols, figsize=(width * ncols, height * nrows), squeeze=False)
    flat = list(grid.ravel())
    for extra in flat[n:]:
        extra.set_visible(False)
    return fig, flat[:n]


def thin_labels(ax, positions, labels, max_labels: int, axis: str = "y") -> None:
    """Tick labels for at most `max_labels` evenly spaced positions (160 names do not fit on an axis)."""
    step = max(1, math.ceil(len(labels) / max_labels))
    keep = slice(0, None, step)
    set_ticks = ax.set_yticks if axis == "y" else ax.set_xticks
    set_ticks(np.asarray(positions)[keep], [str(s) for s in np.asarray(labels, dtype=object)[keep]],
              fontsize="small")


def factor_index(model, factor: str | None) -> int:
    """Index of the grouping factor `factor` (default: the first, the one with most levels)."""
    names = [f.name for f in model.info.factors]
    if factor is None:
        return 0
    if factor not in names:
        raise KeyError(f"{factor!r} is not a grouping factor of the model; factors: {', '.join(names)}")
    return names.index(factor)
