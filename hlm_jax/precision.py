"""Float64 for hlm_jax's own computations without flipping the user's global JAX setting, and one BLAS
thread while they run.

JAX's CPU Cholesky factorisations and triangular solves call scipy's OpenBLAS, whose worker threads spin
against XLA's own thread pool (and against other processes on a busy machine): a 1,795 × 1,795 Cholesky
factor took 0.06 s with one OpenBLAS thread and 0.1-2.4 s with two on the shared 2-core machine. XLA's
matrix products keep all cores. The limit is a context (threadpoolctl, when installed), so the user's
setting is restored on return.
"""
from __future__ import annotations

import contextlib
import functools

import jax

try:
    from threadpoolctl import ThreadpoolController
except ImportError:  # optional: without it BLAS keeps its own thread count
    ThreadpoolController = None


@functools.cache
def _blas_controller():
    """The BLAS libraries loaded in this process (found once: scanning them costs about a millisecond)."""
    return ThreadpoolController() if ThreadpoolController is not None else None


def one_blas_thread():
    """A context in which BLAS/LAPACK run on one thread (a no-op without threadpoolctl)."""
    controller = _blas_controller()
    return controller.limit(limits=1, user_api="blas") if controller is not None else contextlib.nullcontext()


def float64(fn):
    """Run `fn` with JAX's 64-bit mode on and one BLAS thread (context managers: global settings are untouched)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with jax.enable_x64(True), one_blas_thread():
            return fn(*args, **kwargs)

    return wrapper
