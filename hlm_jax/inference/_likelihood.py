"""One door to the likelihood for the inference code: statistics of a design and estimates at θ,
whether the model has one grouping factor (`likelihood.lmm`) or several (`likelihood.crossed`)."""
from __future__ import annotations

from ..fit import crossed_stats, design_stats
from ..likelihood import crossed
from ..likelihood.lmm import Estimates, Stats, estimates


def several_factors(design) -> bool:
    factors = getattr(design.info, "factors", None)
    return factors is not None and len(factors) > 1


def model_stats(design):
    """(statistics, β₀) of a design: what `estimates_at` takes."""
    if several_factors(design):
        return crossed_stats(design)
    return design_stats(design)


def estimates_at(theta, stats, reml) -> Estimates:
    """β̂ (relative to β₀), σ̂, cov(β̂) and the criterion at θ (traceable by JAX)."""
    if isinstance(stats, Stats):
        return estimates(theta, stats, reml)
    return crossed.estimates(theta, stats, reml)[0]


def n_and_p(stats) -> tuple:
    """Number of observations and of fixed effects."""
    base = stats if isinstance(stats, Stats) else stats.first
    return base.n, base.p
