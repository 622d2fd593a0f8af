"""Inference after a fit: model comparison, denominator degrees of freedom, intervals, variance shares.

    anova.py      likelihood-ratio tests between nested fits (REML fits refitted by ML, as lme4)
    ddf.py        Satterthwaite (lmerTest) and Kenward-Roger (pbkrtest) df, derivatives by autodiff
    profile.py    profile-likelihood intervals (lme4's profile/confint) and Wald intervals
    variance.py   intraclass correlation and Nakagawa-Schielzeth R²

Everything here reads a fitted `LmerModel` and the likelihood functions; nothing in the
core imports from this package (LmerModel's confint/icc/r2/tidy(ddf=...) import it lazily).
"""
from __future__ import annotations

from .anova import AnovaResult, DifferentDataError, anova
from .ddf import contrast_test, ddf_table, kenward_roger, satterthwaite
from .profile import confint, profile_intervals, wald_intervals
from .variance import icc, r2

__all__ = ["anova", "AnovaResult", "DifferentDataError", "satterthwaite", "kenward_roger", "ddf_table",
           "contrast_test", "confint", "profile_intervals", "wald_intervals", "icc", "r2"]
