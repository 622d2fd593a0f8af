"""Figures of inference: lme4's profile ζ plots and bootstrap distributions with percentile intervals."""
from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats as sps

from ..inference.profile import profile_intervals
from ..results import fit_design
from .layout import panels

PROFILE_LEVELS = (0.5, 0.8, 0.9, 0.95, 0.99)  # lme4's profile plots mark these intervals


def _ml_estimates(ml) -> pd.Series:
    """The ML fit's parameters under lme4's confint(oldNames = FALSE) names."""
    values = {}
    for _, r in ml.varcorr.iterrows():
        if r["grp"] == "Residual":
            values["sigma"] = r["sdcor"]
        elif r["var2"] is None or (isinstance(r["var2"], float) and np.isnan(r["var2"])):
            values[f"sd_{r['var1']}|{r['grp']}"] = r["sdcor"]
        else:
            values[f"cor_{r['var2']}.{r['var1']}|{r['grp']}"] = r["sdcor"]
    values.update(ml.fixef.to_dict())
    return pd.Series(values)


def at_bound(name: str, value: float) -> bool:
    """An interval end that is the parameter's bound (ζ never reached the level there): sd 0, |cor| 1, ±∞."""
    return (not np.isfinite(value) or (name.startswith("sd_") and value == 0.0)
            or (name.startswith("cor_") and abs(value) == 1.0))


def profile_table(model, which: list[str] | None = None, levels=PROFILE_LEVELS) -> pd.DataFrame:
    """lme4's profile(m) at the interval ends: one row per (parameter, point) with the parameter's value
    and ζ (the signed root of the ML deviance increase), ζ = ∓z at each level's interval ends and 0 at
    the ML estimate. A REML fit is refitted by ML first, as lme4 does."""
    ml = fit_design(model.design, REML=False) if model.reml else model
    estimates = _ml_estimates(ml)
    rows = []
    for level in levels:
        z = float(sps.norm.ppf(0.5 + level / 2))
        ends = profile_intervals(ml, level, which=which)
        for name, r in ends.iterrows():
            rows += [(name, level, end, zeta) for end, zeta in ((r["lower"], -z), (r["upper"], z))
                     if not at_bound(name, end)]
    names = list(dict.fromkeys(r[0] for r in rows))
    rows += [(name, 0.0, estimates[name], 0.0) for name in names]
    table = pd.DataFrame(rows, columns=["parameter", "level", "value", "zeta"])
    table["parameter"] = pd.Categorical(table["parameter"], categories=names)
    return table.sort_values(["parameter", "zeta"], kind="stable").reset_index(drop=True)


def profile(model, which: list[str] | None = None, levels=PROFILE_LEVELS, table: pd.DataFrame | None = None,
            axes=None):
    """lme4's xyplot(profile(m)): ζ against each parameter (sds, correlations, σ and fixed effects),
    with the interval ends of each level as vertical lines from ζ = 0.

    Parameters
    ----------
    model : LmerModel
        A fitted model (profiled by ML, as lme4 does).
    which : list of str, optional
        Parameters (lme4's confint(oldNames = FALSE) names); default all.
    levels : sequence of float
        Interval levels whose ends are found and marked.
    table : DataFrame, optional
        A `profile_table` already computed (skips the profiling).
    axes : sequence of matplotlib Axes, optional
        One per parameter.

    Returns the Figure.
    """
    table = profile_table(model, which, levels) if table is None else table
    names = list(table["parameter"].cat.categories)
    fig, flat = panels(len(names), axes=axes, height=2.8)
    for a, name in zip(flat, names):
        part = table[table["parameter"] == name]
        finite = part[np.isfinite(part["value"])]
        a.plot(finite["value"], finite["zeta"], "-o", color="tab:blue", markersize=3)
        ends = finite[finite["zeta"] != 0]
        a.vlines(ends["value"], 0.0, ends["zeta"], color="0.5", linestyle=":", linewidth=0.8)
        a.axhline(0.0, color="k", linewidth=0.5)
        a.set_xlabel(name)
        a.set_ylabel("ζ")
    fig.suptitle("Profile ζ; interval ends at " + ", ".join(f"{lv:.0%}" for lv in levels), fontsize="medium")
    fig.tight_layout()
    return fig


def bootstrap(result, which: list[str] | None = None, level: float = 0.95, bins: int = 40, axes=None):
    """Histograms of bootstrap replicates (converged ones) with the percentile interval's ends.

    Parameters
    ----------
    result : BootstrapResult
        From `m.bootstrap(...)` / `hlm_jax.bootstrap`.
    which : list of str, optional
        Replicate columns to draw (default: all with finite values).
    level : float
        Coverage of the percentile intervals.
    bins : int
        Histogram bins.
    axes : sequence of matplotlib Axes, optional
        One per column.

    Returns the Figure.
    """
    reps = result.replicates.loc[result.converged]
    columns = list(which) if which is not None else [c for c in reps.columns if np.isfinite(reps[c]).any()]
    intervals = result.confint(level)
    fig, flat = panels(len(columns), axes=axes, height=2.6)
    for a, c in zip(flat, columns):
        values = reps[c].to_numpy()
        a.hist(values[np.isfinite(values)], bins=bins, color="tab:blue", alpha=0.7)
        for end in intervals.loc[c, ["lower", "upper"]]:
            a.axvline(end, color="tab:red", linestyle="--", linewidth=1)
        a.set_xlabel(c)
        a.set_ylabel("replicates")
    fig.suptitle(f"{len(reps)} bootstrap replicates; {level:.0%} percentile intervals", fontsize="medium")
    fig.tight_layout()
    return fig
