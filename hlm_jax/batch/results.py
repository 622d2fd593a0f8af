"""What batched fits return: bootstrap replicates, the bootstrap LRT, per-group OLS fits."""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ..report import html_block, html_frame


class BatchWarning(UserWarning):
    """Some fits of a batch failed (not converged, or not estimable); they are counted, not hidden."""


@dataclass
class BootstrapResult:
    """Parametric bootstrap replicates of a fitted model.

    `replicates`: one row per replicate: fixed effects by name, "sigma", then the standard deviations
    and correlations named as lme4's confint(oldNames=FALSE) names them; `theta` the replicates' θ
    (n × k, lme4's order); `converged` each replicate's convergence flag (failed replicates keep
    their last iterate in `replicates` and are left out of `confint`); `timing` the batched run's
    seconds, compile_s of them tracing and compiling, run_s the rest.
    """

    replicates: pd.DataFrame
    theta: np.ndarray
    converged: np.ndarray
    objective: np.ndarray
    iterations: np.ndarray
    seed: int
    timing: dict = field(default_factory=dict)
    _simulation: object = field(default=None, repr=False)

    @property
    def n(self) -> int:
        return len(self.converged)

    @property
    def n_failed(self) -> int:
        return int(np.sum(~self.converged))

    def confint(self, level: float = 0.95) -> pd.DataFrame:
        """Percentile intervals from the converged replicates (a correlation whose sd is 0 is skipped)."""
        if not 0 < level < 1:
            raise ValueError(f"level must be in (0, 1), got {level}")
        ok = self.replicates.loc[self.converged]
        alpha = (1 - level) / 2
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            lower = np.nanquantile(ok.to_numpy(), alpha, axis=0)
            upper = np.nanquantile(ok.to_numpy(), 1 - alpha, axis=0)
        return pd.DataFrame({"lower": lower, "upper": upper}, index=self.replicates.columns)

    def responses(self, which) -> pd.DataFrame:
        """Response vectors (rows as the model's data) whose sufficient statistics are exactly those of
        replicates `which`: refitting any of them with `lmer` reproduces that replicate's fit.

        The replicates simulate the statistics, not y; this draws the part of ε that the statistics
        do not determine (its direction orthogonal to every group's columns) afresh.
        """
        which = np.atleast_1d(np.asarray(which, dtype=np.int64))
        if np.any((which < 0) | (which >= self.n)):
            raise IndexError(f"replicate indices must lie in [0, {self.n})")
        ys = self._simulation.responses(self.seed, which)
        return pd.DataFrame(ys.T, index=self._simulation.row_index, columns=[f"rep_{i}" for i in which])

    def summary(self, level: float = 0.95) -> pd.DataFrame:
        """Per parameter: mean, sd and percentile interval of the converged replicates."""
        ok = self.replicates.loc[self.converged]
        return pd.concat([ok.mean().rename("mean"), ok.std().rename("sd"), self.confint(level)], axis=1)

    def _repr_html_(self) -> str:
        return html_block(f"Parametric bootstrap: {self.n} replicates, {self.n_failed} failed, seed {self.seed}",
                          html_frame(self.summary(), 5))

    def __repr__(self) -> str:
        return (f"BootstrapResult(n={self.n}, failed={self.n_failed}, seed={self.seed})\n"
                f"{self.replicates.describe().T[['mean', 'std', 'min', 'max']]}")


@dataclass
class PBTest:
    """Parametric bootstrap likelihood-ratio test (pbkrtest's PBmodcomp) of nested models.

    `table` has rows "LRT" (χ² p-value) and "PBtest" (bootstrap p-value (1 + #{t* > t}) / (1 + #{t* > 0}),
    as pbkrtest), columns stat, df, p_value; `reference` is the bootstrap distribution of the statistic;
    `timing` the batched run's seconds (compile_s of them compiling).
    """

    stat: float
    df: int
    p_chisq: float
    p_boot: float
    reference: np.ndarray
    converged: np.ndarray
    n_failed: int
    timing: dict = field(default_factory=dict)

    @property
    def table(self) -> pd.DataFrame:
        return pd.DataFrame({"stat": [self.stat, self.stat], "df": [float(self.df), np.nan],
                             "p_value": [self.p_chisq, self.p_boot]}, index=["LRT", "PBtest"])

    def __repr__(self) -> str:
        used = int(np.sum(self.converged & (self.reference > 0)))
        return (f"Parametric bootstrap test; samples: {len(self.reference)}, used: {used}, "
                f"failed: {self.n_failed}\n{self.table}")


@dataclass
class LmList:
    """Per-group least-squares fits (lme4's lmList): `coef` and `se` (rows: group levels), the residual
    sd `sigma`, residual degrees of freedom `df_resid` and rows `nobs` per group, and `pooled_sd` (the
    residual sd pooled over the fitted groups). Groups that cannot be fitted (fewer rows than
    coefficients, or collinear columns within the group) have NaN rows and are listed in `failed`
    with the reason. `timing`: the call's seconds, compile_s of them compiling, run_s the rest."""

    coef: pd.DataFrame
    se: pd.DataFrame
    sigma: pd.Series
    df_resid: pd.Series
    nobs: pd.Series
    failed: pd.Series
    pooled_sd: float
    timing: dict = field(default_factory=dict, compare=False)

    def tidy(self) -> pd.DataFrame:
        """One row per (group, term): estimate and std_error."""
        est = self.coef.stack(future_stack=True).rename("estimate")
        se = self.se.stack(future_stack=True).rename("std_error")
        out = pd.concat([est, se], axis=1).reset_index()
        return out.rename(columns={out.columns[0]: "group", out.columns[1]: "term"})

    def __repr__(self) -> str:
        return f"LmList: {len(self.coef)} groups, {len(self.failed)} not fitted\n{self.coef}"
