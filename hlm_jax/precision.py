"""Float64 for hlm_jax's own computations without flipping the user's global JAX setting."""
from __future__ import annotations

import functools

import jax


def float64(fn):
    """Run `fn` with JAX's 64-bit mode on (a context manager, so the global setting is untouched)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with jax.enable_x64(True):
            return fn(*args, **kwargs)

    return wrapper
