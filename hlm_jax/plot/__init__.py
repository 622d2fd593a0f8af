"""Figures of fitted models (matplotlib, imported only when this package is).

    caterpillar(m)   conditional modes ± z·conditional sd per level (lme4's dotplot(ranef(m, condVar=TRUE)))
    shrinkage(m)     per-group OLS (BLUE) → BLUP arrows towards the population values, sized by group size
    spaghetti(m)     per-group data and fitted lines, as a trellis or overlaid
    diagnostics(m)   fitted vs residuals, normal QQ plots of the residuals and of each random effect
    profile(m)       lme4's ζ plots of the profile likelihood
    bootstrap(b)     bootstrap distributions with their percentile intervals

Each function returns the matplotlib Figure it drew on; those that draw one panel also take `ax=`.
"""
from __future__ import annotations

from .fitted import diagnostics, spaghetti
from .inference import bootstrap, profile
from .random_effects import caterpillar, shrinkage

__all__ = ["caterpillar", "shrinkage", "spaghetti", "diagnostics", "profile", "bootstrap"]
