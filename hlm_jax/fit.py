"""Design → sufficient statistics → θ̂ and the estimates at θ̂, in one jit-compiled program.

Shapes are bucketed (groups padded to a power of two) so a second model of a
similar size reuses the compiled program instead of recompiling.
"""
from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from .design import Design, bucket_length
from .likelihood.lmm import Estimates, Stats, estimates, group_stats, objective
from .optimize import NewtonState, minimize


class RawFit(NamedTuple):
    """Optimiser state and estimates at θ̂, as arrays (β relative to β₀)."""

    state: NewtonState
    est: Estimates


_group_stats = jax.jit(group_stats, static_argnums=2)


def ols_coefficients(X: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Least-squares β of y on X (the reference point y is centred at)."""
    return np.linalg.lstsq(X, y, rcond=None)[0]


def design_stats(design: Design, y: np.ndarray | None = None) -> tuple[Stats, np.ndarray]:
    """Sufficient statistics of `design` (optionally with another response y) and their β₀."""
    info = design.info
    beta0 = ols_coefficients(info.X, info.y if y is None else y)
    n_slots = bucket_length(info.n_groups + 1)
    parts = _group_stats(design.buckets, jnp.asarray(beta0), n_slots)
    return Stats(*parts, lam_rows=tuple(int(i) for i in info.theta.rows),
                 lam_cols=tuple(int(i) for i in info.theta.cols)), beta0


@partial(jax.jit, static_argnames=("max_iter",))
def fit_stats(stats: Stats, theta0: jax.Array, lower: jax.Array, reml: jax.Array, max_iter: int = 200) -> RawFit:
    """Minimise the profiled criterion over θ ≥ lower and evaluate the estimates at θ̂."""
    state = minimize(objective, theta0, lower, (stats, reml), max_iter=max_iter)
    return RawFit(state, estimates(state.x, stats, reml))
