"""Float64 for hlm_jax's own computations without flipping the user's global JAX setting, and one BLAS
thread while they run.

JAX's CPU Cholesky factorisations and triangular solves call scipy's OpenBLAS, whose worker threads spin
against XLA's own thread pool (and against other processes on a busy machine): a 1,795 × 1,795 Cholesky
factor took 0.06 s with one OpenBLAS thread and 0.1-2.4 s with two on the shared 2-core machine. XLA's
matrix products keep all cores. The limit is a context (threadpoolctl), so the user's
setting is restored on return.
"""
from __future__ import annotations

import contextlib
import functools

import jax
from threadpoolctl import ThreadpoolController


@functools.cache
def _blas_controller():
    """The BLAS libraries loaded in this process (found once: scanning them costs 10-17 ms here)."""
    return ThreadpoolController()


def one_blas_thread():
    """A context in which BLAS/LAPACK run on one thread."""
    return _blas_controller().limit(limits=1, user_api="blas")


def float64(fn=None, *, blas_limit: bool = True):
    """Run `fn` with JAX's 64-bit mode on and one BLAS thread (context managers: global settings are untouched).
    `blas_limit=False` (lmer, fit_design): 64-bit mode only; the fits whose programs factor large matrices take the
    limit themselves (`fit.py`), so a first single-factor fit skips the scan of the loaded libraries (10-17 ms)."""
    if fn is None:
        return functools.partial(float64, blas_limit=blas_limit)

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with jax.enable_x64(True), (one_blas_thread() if blas_limit else contextlib.nullcontext()):
            return fn(*args, **kwargs)

    return wrapper
