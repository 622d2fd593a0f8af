"""The seeds' classic methods side by side: OLS, fixed effects, between, random effects."""
from __future__ import annotations

import re

import numpy as np
import pandas as pd

from ..design import DesignError, build_design
from ..formula import FormulaError
from ..precision import float64
from ..report import with_timing
from ..results import fit_design
from .equations import equation_terms
from .contextual import group_mean, ols_fit, within_estimator


@with_timing
@float64
def compare_methods(formula: str, group: str, data: pd.DataFrame, REML: bool = True,
                    random_slope: bool = True) -> pd.DataFrame:
    """The slope of y on x estimated by each method of the seeds (London schools; Monette's Methods 1-6):

        pooled OLS                    lm(y ~ x): all rows together, schools ignored
        between groups (ecological)   lm(ȳ_g ~ x̄_g): one row per group, equal weights
        per-group OLS, averaged       mean of the per-group slopes; SE from the within-group residual
                                      variance only (a fixed-effects model: generalises to these groups)
        two-stage (derived variables) the same mean; SE = sd of the slopes / √G (generalises to new groups)
        fixed effects (within)        lm(y ~ x + group): one common within-group slope
        mixed model                   lmer(y ~ x + (x | group))  (random_slope=False: (1 | group))
        mixed + group mean: within    lmer(y ~ x + x̄_g + ...): the within-group slope
        mixed + group mean: between   ... its between-group slope (x + x̄_g coefficients)

    Columns: estimate, std_error, sd (spread of the per-group slopes), n (rows or groups used),
    estimates (which effect the method estimates). `.attrs["timing"]`: the call's seconds, compile_s, run_s.
    """
    if not isinstance(formula, str) or "~" not in formula or "|" in formula:
        raise FormulaError(f"compare_methods needs a formula 'y ~ x' without random terms, got {formula!r}")
    y_name, rhs = (s.strip() for s in formula.split("~", 1))
    terms = [t for t in equation_terms(rhs, "formula") if t != "1"]
    if len(terms) != 1 or not re.fullmatch(r"[A-Za-z_.][A-Za-z0-9_.]*", terms[0]):
        raise FormulaError(f"compare_methods compares the slope of one numeric column: 'y ~ x', got {formula!r}")
    x_name = terms[0]
    for c in (y_name, x_name, group):
        if c not in data.columns:
            raise DesignError(f"column {c!r} is not in the data (columns: {', '.join(map(str, data.columns))})")
    frame = data[[y_name, x_name, group]].dropna().copy()
    y = frame[y_name].to_numpy(float)
    x = frame[x_name].to_numpy(float)
    n = len(frame)
    rows = []

    # 1. pooled OLS
    beta, cov, _, _ = ols_fit(np.column_stack([np.ones(n), x]), y)
    rows.append(("pooled OLS", beta[1], np.sqrt(cov[1, 1]), np.nan, n, "marginal: a mix of within and between"))

    # 2. between groups
    means = frame.groupby(group, observed=True)[[y_name, x_name]].mean()
    G = len(means)
    beta, cov, _, _ = ols_fit(np.column_stack([np.ones(G), means[x_name].to_numpy(float)]), means[y_name].to_numpy(float))
    rows.append(("between groups (OLS on group means)", beta[1], np.sqrt(cov[1, 1]), np.nan, G,
                 "between (ecological)"))

    # 3./4. per-group OLS
    slopes, sxx, rss, df_resid = [], [], 0.0, 0
    for _, d in frame.groupby(group, observed=True):
        xg, yg = d[x_name].to_numpy(float), d[y_name].to_numpy(float)
        if len(xg) < 2 or np.ptp(xg) == 0:
            continue  # the slope cannot be estimated in this group
        xc = xg - xg.mean()
        s = float(xc @ xc)
        b = float(xc @ (yg - yg.mean()) / s)
        slopes.append(b)
        sxx.append(s)
        r = yg - yg.mean() - b * xc
        rss += float(r @ r)
        df_resid += len(xg) - 2
    slopes = np.asarray(slopes)
    Gs = len(slopes)
    sd = float(np.std(slopes, ddof=1))
    s2_within = rss / df_resid if df_resid > 0 else np.nan
    se_fixed = float(np.sqrt(s2_within * np.sum(1.0 / np.asarray(sxx))) / Gs)
    rows.append(("per-group OLS, averaged", slopes.mean(), se_fixed, sd, Gs,
                 "within, groups weighted equally (SE: within-group variation only)"))
    rows.append(("two-stage (derived variables)", slopes.mean(), sd / np.sqrt(Gs), sd, Gs,
                 "within, groups weighted equally (SE: between-group variation of the slopes)"))

    # 5. fixed effects (within) OLS
    beta, cov, _ = within_estimator(frame, y_name, [x_name], group)
    rows.append(("fixed effects (group dummies)", beta[0], np.sqrt(cov[0, 0]), np.nan, n, "within"))

    # 6. mixed model, and 7. with the contextual group mean
    random = f"({x_name} | {group})" if random_slope else f"(1 | {group})"
    m = fit_design(build_design(f"{y_name} ~ {x_name} + {random}", frame), REML)
    rows.append(("mixed model", m.fixef[x_name], m.std_errors[x_name], np.nan, n,
                 "mostly within; assumes between = within"))
    mean_name = f"{x_name}_mean"
    while mean_name in frame.columns:
        mean_name += "_"
    frame[mean_name] = group_mean(frame, x_name, group)
    mc = fit_design(build_design(f"{y_name} ~ {x_name} + {mean_name} + {random}", frame), REML)
    V = mc.vcov
    rows.append(("mixed + group mean: within", mc.fixef[x_name], mc.std_errors[x_name], np.nan, n, "within"))
    se_b = np.sqrt(V.loc[x_name, x_name] + V.loc[mean_name, mean_name] + 2 * V.loc[x_name, mean_name])
    rows.append(("mixed + group mean: between", mc.fixef[x_name] + mc.fixef[mean_name], se_b, np.nan, n, "between"))
    table = pd.DataFrame(rows, columns=["method", "estimate", "std_error", "sd", "n", "estimates"]).set_index("method")
    table["estimate"] = table["estimate"].astype(float)
    table["std_error"] = table["std_error"].astype(float)
    table.attrs["formula"] = formula
    table.attrs["group"] = group
    return table
