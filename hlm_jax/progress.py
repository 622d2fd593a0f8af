"""Progress bars for long work (bootstrap, pb_test, fit_many, profiles), in a terminal and in Jupyter.

A bar appears when `show` is True, or, with show=None (the default), once the work has lasted 2 s;
show=False, or the environment variable HLM_JAX_PROGRESS=0, turns bars off. In Jupyter the widget bar
is used when ipywidgets is installed; without it the text bar, which notebooks show as text (tqdm.auto
would warn "IProgress not found" there first).
"""
from __future__ import annotations

import importlib.util
import os

from tqdm import std

DELAY_S = 2.0


def tqdm_class():
    """tqdm.auto's class when ipywidgets is installed (widgets in Jupyter), else the text bar."""
    if importlib.util.find_spec("ipywidgets") is not None:
        from tqdm.auto import tqdm  # chooses the widget bar in Jupyter, the text bar elsewhere

        return tqdm
    return std.tqdm


def enabled(show: bool | None) -> bool:
    """Whether a bar may be drawn: not when show=False or HLM_JAX_PROGRESS=0 (and show is not True)."""
    return show is True or (show is None and os.environ.get("HLM_JAX_PROGRESS", "1") != "0")


def bar(total: int, show: bool | None = None, desc: str = "", unit: str = "fit"):
    """A progress bar over `total` items (a context manager; `.update(k)` advances it)."""
    return tqdm_class()(total=total, desc=desc, unit=unit, disable=not enabled(show),
                        delay=0 if show else DELAY_S, leave=False)
