"""F tables: one mixed model's sequential (type I) ANOVA as lme4's anova(m), and R's F test between
nested least-squares fits (anova(lm1, lm2)).

lme4's table: with R_X the upper Cholesky factor of the fixed-effect block (R_XᵀR_X = σ²·vcov(β̂)⁻¹,
columns in formula order), each column's sum of squares is (R_X β̂)_j²; a term's Sum Sq adds its
kept columns (npar of them), Mean Sq = Sum Sq / npar and F = Mean Sq / σ̂². Terms are named as R
names them (`service:d`).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats as sps

from ..report import format_pvalues, table_text


@dataclass
class FTable:
    """An analysis-of-variance table (`table`) with its heading lines, printed as R prints it."""

    table: pd.DataFrame
    heading: list[str]

    def __str__(self) -> str:
        rows = [[""] + list(self.table.columns)]
        for name, r in self.table.iterrows():
            rows.append([str(name)] + [_cell(c, r[c]) for c in self.table.columns])
        return "\n".join(self.heading + [table_text(rows, ["l"] + ["r"] * len(self.table.columns))]) + "\n"

    __repr__ = __str__


def _cell(column: str, value) -> str:
    if not np.isfinite(value):
        return ""
    if column in ("npar", "Res.Df", "Df"):
        return f"{int(value)}"
    if column.startswith("Pr("):
        return format_pvalues(np.array([value]))[0]
    if column in ("F value", "F"):
        return f"{value:.4f}"
    return f"{value:.5g}"


def sequential_table(model) -> FTable:
    """lme4's anova(m) for one fit: npar, Sum Sq, Mean Sq and F value per term, in formula order."""
    V = model.vcov.to_numpy()
    sigma2 = model.sigma ** 2
    U = np.linalg.cholesky(sigma2 * np.linalg.inv(V)).T  # R_X: R_XᵀR_X = σ² vcov⁻¹
    ss_columns = (U @ model.fixef.to_numpy()) ** 2
    info = model.info
    rows = []
    for k, term in enumerate(info.fixed_terms):
        mine = info.fixed_assign == k
        if term == "(Intercept)" or not mine.any():
            continue
        ss = float(ss_columns[mine].sum())
        npar = int(mine.sum())
        rows.append((term, npar, ss, ss / npar, ss / npar / sigma2))
    table = pd.DataFrame([r[1:] for r in rows], index=[r[0] for r in rows],
                         columns=["npar", "Sum Sq", "Mean Sq", "F value"])
    return FTable(table, ["Analysis of Variance Table"])


def lm_table(*models) -> FTable:
    """R's anova(lm1, lm2, ...): residual df and RSS per model, and the F test of each against the one
    before it, scaled by the residual mean square of the largest model (fewest residual df)."""
    df = np.array([m.df_resid for m in models], float)
    rss = np.array([m.rss for m in models])
    big = int(np.argmin(df))
    scale = rss[big] / df[big]
    rows = []
    for i, m in enumerate(models):
        if i == 0:
            rows.append((df[i], rss[i], np.nan, np.nan, np.nan, np.nan))
            continue
        d, ss = df[i - 1] - df[i], rss[i - 1] - rss[i]
        f = ss / d / scale if d != 0 else np.nan
        p = float(sps.f.sf(f, abs(d), df[big])) if d != 0 else np.nan
        rows.append((df[i], rss[i], d, ss, f, p))
    table = pd.DataFrame(rows, index=range(1, len(models) + 1),
                         columns=["Res.Df", "RSS", "Df", "Sum of Sq", "F", "Pr(>F)"])
    heading = ["Analysis of Variance Table", ""] + [f"Model {i + 1}: {m.formula}" for i, m in enumerate(models)]
    return FTable(table, heading)
