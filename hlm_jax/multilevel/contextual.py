"""Contextual (group-mean) and within-group variables, and the Hausman-type within/between comparison."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import pandas as pd
from scipy import stats as sps

from ..design import DesignError, build_design
from ..formula import Name, deparse, parse_formula
from ..inference.ddf import contrast_test
from ..precision import float64
from ..report import table_text, with_timing
from ..results import LmerModel, fit_design


def _group_keys(data: pd.DataFrame, group: str | Sequence[str]) -> list[str]:
    keys = [group] if isinstance(group, str) else list(group)
    missing = [k for k in keys if k not in data.columns]
    if missing:
        raise DesignError(f"column {missing[0]!r} is not in the data (columns: {', '.join(map(str, data.columns))})")
    return keys


def group_mean(data: pd.DataFrame, variable: str, group: str | Sequence[str], name: str | None = None) -> pd.Series:
    """Each row's group mean of `variable` (a contextual, derived level-2 variable; Monette's capply(x, g, mean)).

    Missing values are left out of the means; a row whose group has no values gets NaN.
        hsb["ses_mean"] = hj.group_mean(hsb, "ses", "school")
    """
    keys = _group_keys(data, group)
    if variable not in data.columns:
        raise DesignError(f"column {variable!r} is not in the data")
    if not pd.api.types.is_numeric_dtype(data[variable]) or data[variable].dtype == bool:
        values = data[variable].astype(float)
    else:
        values = data[variable]
    out = values.groupby([data[k] for k in keys], observed=True, dropna=False).transform("mean")
    return out.rename(name or f"{variable}_mean")


def center_within(data: pd.DataFrame, variable: str, group: str | Sequence[str], name: str | None = None) -> pd.Series:
    """`variable` centred within groups (CWG): its deviation from its group mean.
        hsb["ses_cwg"] = hj.center_within(hsb, "ses", "school")
    """
    mean = group_mean(data, variable, group)
    return (data[variable].astype(float) - mean).rename(name or f"{variable}_cwg")



@dataclass
class HausmanResult:
    """Within- vs between-group effect of one variable: the estimates, and two tests that they are equal.

    `table`: the within (fixed-effects OLS), random-effects (mixed model), and, from the mixed model
    with the contextual group mean, the within, between and contextual (= between − within) effects.
    `hausman`: (b_FE − b_RE)² / (V_FE − V_RE) ~ χ²(1) (Hausman 1978).
    `contextual`: t test of the group-mean coefficient (Mundlak's form), Satterthwaite df.
    `timing`: the call's seconds, compile_s of them compiling, run_s the rest (`report.with_timing`).
    """

    variable: str
    group: str
    table: pd.DataFrame
    hausman: dict
    contextual: dict
    model: LmerModel = field(repr=False)
    contextual_model: LmerModel = field(repr=False)
    timing: dict = field(default_factory=dict, repr=False, compare=False)

    def __str__(self) -> str:
        t = self.table
        rows = [["", "Estimate", "Std. Error"]] + [[k, f"{r['estimate']:.4f}", f"{r['std_error']:.4f}"]
                                                   for k, r in t.iterrows()]
        h, c = self.hausman, self.contextual
        return (f"Within vs between {self.group} effect of {self.variable}\n"
                + table_text(rows, ["l", "r", "r"])
                + (f"\nHausman test (fixed vs random effects): chisq = {h['statistic']:.3f}, df = {h['df']}, "
                   f"p = {h['p_value']:.4g}" if np.isfinite(h["statistic"]) else
                   "\nHausman test (fixed vs random effects): not defined here, the random-effects estimate is "
                   "not more precise than the within one (V_FE − V_RE ≤ 0); use the contextual test")
                + f"\nContextual effect (between − within): {c['estimate']:.4f} (SE {c['std_error']:.4f}), "
                  f"t = {c['statistic']:.3f}, df = {c['df']:.1f}, p = {c['p_value']:.4g}\n")

    __repr__ = __str__


def ols_fit(X: np.ndarray, y: np.ndarray):
    beta, *_ = np.linalg.lstsq(X, y, rcond=None)
    resid = y - X @ beta
    df = len(y) - np.linalg.matrix_rank(X)
    s2 = float(resid @ resid / df) if df > 0 else np.nan
    cov = s2 * np.linalg.pinv(X.T @ X)
    return beta, cov, df, s2


def within_estimator(frame: pd.DataFrame, response: str, columns: list[str], group: str):
    """Fixed-effects (dummy-variable) OLS: y and X demeaned within groups; df = n − G − k."""
    keys = frame[group]
    y = frame[response].astype(float)
    Xw = np.column_stack([(frame[c] - frame[c].groupby(keys).transform("mean")).to_numpy(float) for c in columns])
    yw = (y - y.groupby(keys).transform("mean")).to_numpy(float)
    beta, *_ = np.linalg.lstsq(Xw, yw, rcond=None)
    resid = yw - Xw @ beta
    G = keys.nunique()
    df = len(yw) - G - np.linalg.matrix_rank(Xw)
    s2 = float(resid @ resid / df)
    cov = s2 * np.linalg.pinv(Xw.T @ Xw)
    return beta, cov, df


@with_timing
@float64
def hausman_test(formula: str, data: pd.DataFrame, variable: str, group: str | None = None,
                 REML: bool = True) -> HausmanResult:
    """Do the within- and between-group effects of `variable` differ? (Monette: "First diagnostics:
    Hausman test"; "Contextual variables to the rescue".)

        hj.hausman_test("mathach ~ ses + (1 | school)", hsb, "ses")

    Fits the mixed model `formula`, and the same model with the group mean of `variable` added
    (the contextual variable); `group` defaults to the formula's (first) grouping factor.
    """
    parsed = parse_formula(formula)
    if group is None:
        group = parsed.random[0].group[0] if len(parsed.random[0].group) == 1 else None
        if group is None:
            raise DesignError("give group=: the formula's grouping factor is an interaction")
    model = fit_design(build_design(formula, data), REML)
    frame = data.loc[model.info.row_index].copy()
    mean_name = f"{variable}_mean"
    while mean_name in frame.columns:
        mean_name += "_"
    frame[mean_name] = group_mean(frame, variable, group)
    fixed_part = parsed.fixed
    random_part = " + ".join(t.text for t in parsed.random)
    ctx_formula = f"{parsed.response} ~ {fixed_part} + {deparse(Name(mean_name))} + {random_part}"
    ctx = fit_design(build_design(ctx_formula, frame), REML)
    names = list(ctx.fixef.index)
    if variable not in names:
        raise DesignError(f"{variable!r} must be a numeric fixed effect of the formula (fixed effects: {', '.join(names)})")
    b, V = ctx.fixef, ctx.vcov
    within, contextual = b[variable], b[mean_name]
    between = within + contextual
    se_between = float(np.sqrt(V.loc[variable, variable] + V.loc[mean_name, mean_name]
                               + 2 * V.loc[variable, mean_name]))
    # the fixed-effects (within) OLS estimate of all level-1 columns of the model
    level1 = [c for c in model.info.fixed_names if c != "(Intercept)"]
    X = pd.DataFrame(model.info.X, index=frame.index, columns=list(model.info.fixed_names))
    Xf = pd.concat([X[level1], frame[[group]], pd.Series(model.info.y, index=frame.index, name="__y")], axis=1)
    varies = [c for c in level1 if Xf.groupby(group)[c].nunique().max() > 1]
    beta_fe, cov_fe, df_fe = within_estimator(Xf, "__y", varies, group)
    j = varies.index(variable)
    b_fe, v_fe = float(beta_fe[j]), float(cov_fe[j, j])
    b_re, v_re = float(model.fixef[variable]), float(model.vcov.loc[variable, variable])
    diff_var = v_fe - v_re
    chisq = (b_fe - b_re) ** 2 / diff_var if diff_var > 0 else np.nan
    hausman = {"statistic": chisq, "df": 1, "p_value": float(sps.chi2.sf(chisq, 1)) if np.isfinite(chisq) else np.nan,
               "within": b_fe, "random_effects": b_re}
    L = np.zeros(len(names))
    L[names.index(mean_name)] = 1.0
    ctx_test = contrast_test(ctx, L, "satterthwaite")
    table = pd.DataFrame(
        [(b_fe, np.sqrt(v_fe)), (b_re, np.sqrt(v_re)), (within, np.sqrt(V.loc[variable, variable])),
         (between, se_between), (contextual, np.sqrt(V.loc[mean_name, mean_name]))],
        index=["within (fixed-effects OLS)", "mixed model", "within (mixed + group mean)",
               "between (mixed + group mean)", "contextual = between - within"],
        columns=["estimate", "std_error"])
    return HausmanResult(variable, group, table, hausman, ctx_test, model, ctx)
