"""Ordinary least squares through the same formula machinery: `hj.lm(formula, data)` with R's summary.

X is built sparse in R's column order and names (`design.fixed_part`), aliased columns are dropped
as R's qr drops them (R's lm reports them as NA, "not defined because of singularities"), and the
fit solves the normal equations with the Cholesky factor of XᵀX, so a model with thousands of
indicator columns (InstEval's y ~ service + dept + d + service:d: 2,269 columns, 1,790 kept)
never forms a dense X. Residuals are computed from X directly (not from yᵀy − β̂ᵀXᵀy).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import scipy.linalg as sla
from scipy import stats as sps

from . import fixed
from .design import fixed_part, model_frame
from .formula import FormulaError, parse_formula
from .report import STAR_LEGEND, coefficient_rows, table_text, with_timing

SHOWN_COEFFICIENTS = 20  # rows of the coefficient table printed by summary() unless asked otherwise


@dataclass
class LmModel:
    """A least-squares fit laid out as R's lm: coefficients, their SEs, σ̂, R², the overall F; `timing`: the
    fitting call's seconds, compile_s of them compiling (none: lm runs in numpy) and run_s the rest."""

    formula: str
    coef: pd.Series
    std_errors: pd.Series
    residuals: np.ndarray
    df_resid: int
    intercept: bool
    tss: float
    aliased: tuple[str, ...]
    n_dropped_missing: int = 0
    timing: dict = field(default_factory=dict, compare=False)  # filled by lm (`with_timing`)

    @property
    def nobs(self) -> int:
        return len(self.residuals)

    @property
    def rss(self) -> float:
        return float(self.residuals @ self.residuals)

    @property
    def sigma(self) -> float:
        """The residual standard error, √(RSS / df)."""
        return float(np.sqrt(self.rss / self.df_resid))

    @property
    def r2(self) -> float:
        return 1.0 - self.rss / self.tss

    @property
    def adj_r2(self) -> float:
        return 1.0 - (1.0 - self.r2) * (self.nobs - self.intercept) / self.df_resid

    @property
    def fstatistic(self) -> tuple[float, int, int]:
        """R's overall F (value, numdf, dendf): the model against the intercept-only (or empty) model."""
        numdf = len(self.coef) - self.intercept
        return (self.tss - self.rss) / numdf / self.sigma ** 2, numdf, self.df_resid

    @property
    def f_pvalue(self) -> float:
        value, numdf, dendf = self.fstatistic
        return float(sps.f.sf(value, numdf, dendf))

    def tidy(self) -> pd.DataFrame:
        """term, estimate, std_error, statistic (t) and p_value per kept coefficient (R's coef(summary(m)))."""
        t = self.coef / self.std_errors
        return pd.DataFrame({"term": self.coef.index, "estimate": self.coef.to_numpy(),
                             "std_error": self.std_errors.to_numpy(), "statistic": t.to_numpy(),
                             "p_value": 2.0 * sps.t.sf(np.abs(t.to_numpy()), self.df_resid)})

    def summary(self, max_rows: int = SHOWN_COEFFICIENTS) -> str:
        """R's print(summary(lm)), the coefficient table cut to its first `max_rows` rows."""
        q = np.quantile(self.residuals, [0, 0.25, 0.5, 0.75, 1])
        table = self.tidy()
        rows = coefficient_rows(table.head(max_rows), stars=True)
        value, numdf, dendf = self.fstatistic
        singular = f" ({len(self.aliased)} not defined because of singularities)" if self.aliased else ""
        lines = [f"Call:\nlm(formula = {self.formula})", "", "Residuals:",
                 table_text([["Min", "1Q", "Median", "3Q", "Max"], [f"{v:.4f}" for v in q]], ["r"] * 5),
                 "", f"Coefficients:{singular}", table_text(rows, ["l"] + ["r"] * (len(rows[0]) - 1))]
        if len(table) > max_rows:
            lines.append(f"... ({len(table) - max_rows} more rows: m.tidy() has them all)")
        lines += ["---", STAR_LEGEND, "",
                  f"Residual standard error: {self.sigma:.4g} on {self.df_resid} degrees of freedom",
                  f"Multiple R-squared:  {self.r2:.4g},\tAdjusted R-squared:  {self.adj_r2:.4g}",
                  f"F-statistic: {value:.4g} on {numdf} and {dendf} DF,  p-value: {_p_text(self.f_pvalue)}"]
        return "\n".join(lines) + "\n"

    __str__ = summary

    def __repr__(self) -> str:
        return self.summary()


@with_timing
def lm(formula: str, data: pd.DataFrame) -> LmModel:
    """Fit a linear model by least squares, R's lm(formula, data): `hj.lm("y ~ service + dept + d", df)`."""
    parsed = parse_formula(formula, require_random=False)
    if parsed.random:
        raise FormulaError(f"lm() fits fixed effects only, but the formula has the random term "
                           f"{parsed.random[0].text}; use hj.lmer for a mixed model")
    frame, n_dropped, y = model_frame(parsed, data)
    part = fixed_part(parsed, frame)
    X = part.X
    XtX = fixed.gram(X)
    factor = sla.cho_factor(XtX, lower=False)
    beta = sla.cho_solve(factor, np.asarray(X.T @ y, dtype=float).ravel())
    residuals = y - X @ beta
    df_resid = len(y) - len(beta)
    if df_resid <= 0:
        raise ValueError(f"lm() needs more observations ({len(y)}) than coefficients ({len(beta)})")
    R = np.triu(factor[0])
    Rinv = sla.solve_triangular(R, np.eye(len(beta)))
    sigma2 = residuals @ residuals / df_resid
    se = np.sqrt(sigma2 * np.einsum("ij,ij->i", Rinv, Rinv))
    intercept = "(Intercept)" in part.names
    tss = float(((y - y.mean()) ** 2).sum() if intercept else (y ** 2).sum())
    names = list(part.names)
    return LmModel(formula, pd.Series(beta, index=names), pd.Series(se, index=names), residuals, df_resid,
                   intercept, tss, part.dropped, n_dropped)


def _p_text(p: float) -> str:
    """R's format.pval for a single p-value: below machine precision as '< 2.2e-16'."""
    return "< 2.2e-16" if p < 2.2e-16 else f"{p:.4g}"
