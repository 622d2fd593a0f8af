"""lme4's identifiability checks before a fit (`check.nobs.vs.nlev`, `check.nobs.vs.nRE`), raised with
lme4's words as `IdentifiabilityError` (a ValueError), and a check that the residual variance is identified.
"""
from __future__ import annotations

from .formula import DesignError


class IdentifiabilityError(DesignError):
    """The data cannot identify the model's parameters (lme4's identifiability checks)."""


def term_text(term) -> str:
    """A random term as lme4 prints it: `(1 + Days | Subject)`."""
    columns = ["1" if c == "(Intercept)" else c for c in term.columns]
    if "1" not in columns:
        columns.insert(0, "0")
    return f"({' + '.join(columns)} | {term.factor})"


def check_identifiable(factors, terms, nobs: int, p: int) -> None:
    """lme4's checks: every grouping factor has fewer levels than observations, every term has fewer
    random effects than observations; and the fixed effects leave residual degrees of freedom."""
    problems = [f.name for f in factors if f.n_levels >= nobs]
    if problems:
        raise IdentifiabilityError("number of levels of each grouping factor must be < number of observations "
                                   f"(problems: {', '.join(problems)})")
    for t in terms:
        n_re = t.q * t.n_levels
        if nobs <= n_re:
            raise IdentifiabilityError(
                f"number of observations (={nobs}) <= number of random effects (={n_re}) for term {term_text(t)}; "
                "the random-effects parameters and the residual variance (or scale parameter) are probably "
                "unidentifiable")
    if nobs <= p:
        raise IdentifiabilityError(f"number of observations (={nobs}) <= number of fixed-effect coefficients "
                                   f"(={p}): the residual variance is not identified")
