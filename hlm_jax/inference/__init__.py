"""Inference after a fit: model comparison, denominator degrees of freedom, intervals, variance shares.

    anova.py      likelihood-ratio tests between nested fits (REML fits refitted by ML, as lme4)
    ddf.py        Satterthwaite (lmerTest) and Kenward-Roger (pbkrtest) df, exact derivatives
    profile.py    profile-likelihood intervals (lme4's profile/confint) and Wald intervals
    unprofiled.py the deviance in (θ, σ) with closed-form derivatives (profiles, Satterthwaite, SEs)
    variance.py   intraclass correlation and Nakagawa-Schielzeth R²
    information.py SEs of the variance parameters from the deviance's exact Hessian (variance_table)
    tails.py      t, F and χ² tail probabilities (scipy.special, not scipy.stats)

Everything here reads a fitted `LmerModel` and the likelihood functions; nothing in the
core imports from this package (LmerModel's confint/icc/r2/tidy(ddf=...) import it lazily).
"""
from __future__ import annotations

import importlib

# Each name loads its own module on first access (PEP 562): a first profile confint then loads neither anova
# nor ddf. None of them imports scipy.stats (0.8-1.2 s in a fresh process after a fit): see tails.py.
_MODULES = {"anova": "anova", "AnovaResult": "anova", "DifferentDataError": "anova", "satterthwaite": "ddf",
            "kenward_roger": "ddf", "ddf_table": "ddf", "contrast_test": "ddf", "confint": "profile",
            "profile_intervals": "profile", "wald_intervals": "profile", "icc": "variance", "r2": "variance"}
__all__ = list(_MODULES)


def __getattr__(name: str):
    """The public names, each imported from its module on first access."""
    if name not in _MODULES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_MODULES[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    """The loaded names and those `__getattr__` loads on first access."""
    return sorted(set(globals()) | set(__all__))
