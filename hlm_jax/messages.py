"""Warnings that point at the user's line, and checks of simple arguments.

`warn` walks the stack to the first frame outside the hlm_jax package, so a warning shows the line
of the user's code that called hlm_jax (not precision.py or another internal module).
"""
from __future__ import annotations

import os
import sys
import warnings

import numpy as np

PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep


def user_stacklevel() -> int:
    """`stacklevel` for a `warnings.warn` called by this function's caller that reaches the first frame
    outside hlm_jax."""
    frame, level = sys._getframe(1), 1
    while frame is not None and frame.f_code.co_filename.startswith(PACKAGE_DIR):
        frame, level = frame.f_back, level + 1
    return level


def warn(message: str, category: type[Warning] = UserWarning) -> None:
    """`warnings.warn` attributed to the user's line that called into hlm_jax."""
    warnings.warn(message, category, stacklevel=user_stacklevel())


def require_bool(value, name: str) -> bool:
    """`value` as a bool; anything but True/False (numpy's too) raises ValueError naming the argument."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    raise ValueError(f"{name} must be True or False, got {value!r}")
