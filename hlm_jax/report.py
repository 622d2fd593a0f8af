"""Text reports of a fitted model, laid out as lme4's print(summary(m))."""
from __future__ import annotations

import numpy as np


def _table(rows: list[list[str]], align: list[str]) -> str:
    """Left/right aligned columns separated by one space."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(align))]
    lines = []
    for r in rows:
        cells = [c.ljust(w) if a == "l" else c.rjust(w) for c, w, a in zip(r, widths, align)]
        lines.append(" ".join(cells).rstrip())
    return "\n".join(lines)


table = _table  # the public name, for other reports (GLMM summaries)


def _sig(x: float, digits: int = 4) -> str:
    return f"{x:.{digits}g}" if np.isfinite(x) else "NaN"


def header(model) -> str:
    how = "REML" if model.reml else "maximum likelihood"
    lines = [f"Linear mixed model fit by {how} (hlm_jax)", f"Formula: {model.formula}"]
    if model.info.n_dropped_missing:
        lines.append(f"({model.info.n_dropped_missing} observations deleted due to missingness)")
    lines.append("")
    if model.reml:
        lines.append(f"REML criterion at convergence: {model.objective:.4f}")
    else:
        stats = [("AIC", model.aic), ("BIC", model.bic), ("logLik", model.loglik), ("deviance", model.objective),
                 ("df.resid", float(model.nobs - model.n_params))]
        lines.append(_table([[k for k, _ in stats], [f"{v:.1f}" for _, v in stats]], ["r"] * len(stats)))
    return "\n".join(lines)


def scaled_residuals(model) -> str:
    r = model.residuals().to_numpy() / model.sigma
    qs = np.quantile(r, [0, 0.25, 0.5, 0.75, 1])
    return "Scaled residuals:\n" + _table([["Min", "1Q", "Median", "3Q", "Max"], [f"{q:.4f}" for q in qs]],
                                          ["r"] * 5)


def random_effects(model) -> str:
    rows = [["Groups", "Name", "Variance", "Std.Dev.", "Corr"]]
    for name, cols, cov in model.term_covariances():
        sd = np.sqrt(np.diag(cov))
        for i, c in enumerate(cols):
            corr = [f"{cov[i, j] / (sd[i] * sd[j]):.2f}" if sd[i] * sd[j] > 0 else "NaN" for j in range(i)]
            rows.append([name if i == 0 else "", c, _sig(cov[i, i]), _sig(sd[i]), " ".join(corr)])
    rows.append(["Residual", "", _sig(model.sigma ** 2), _sig(model.sigma), ""])
    groups = ", ".join(f"{k}, {v}" for k, v in model.ngroups.items())
    return ("Random effects:\n" + _table(rows, ["l", "l", "r", "r", "l"])
            + f"\nNumber of obs: {model.nobs}, groups:  {groups}")


def fixed_effects(model) -> str:
    tidy = model.tidy()
    rows = [["", "Estimate", "Std. Error", "t value"]]
    for _, r in tidy.iterrows():
        rows.append([r["term"], f"{r['estimate']:.4g}" if abs(r["estimate"]) < 1e-3 else f"{r['estimate']:.4f}",
                     f"{r['std_error']:.4f}", f"{r['statistic']:.3f}"])
    return "Fixed effects:\n" + _table(rows, ["l", "r", "r", "r"])


def fixed_correlation(model) -> str:
    names = list(model.fixef.index)
    if len(names) < 2:
        return ""
    V = model.vcov.to_numpy()
    sd = np.sqrt(np.diag(V))
    C = V / np.outer(sd, sd)
    short = [n if len(n) <= 6 else n[:6] for n in names]
    rows = [[""] + short[:-1]]
    for i in range(1, len(names)):
        rows.append([names[i]] + [f"{C[i, j]:.3f}" for j in range(i)] + [""] * (len(names) - 1 - i))
    return "Correlation of Fixed Effects:\n" + _table(rows, ["l"] + ["r"] * (len(names) - 1))


def notes(model) -> str:
    out = []
    if model.info.dropped_fixed:
        out.append(f"fixed-effect model matrix is rank deficient so dropping {len(model.info.dropped_fixed)} "
                   f"columns / coefficients: {', '.join(model.info.dropped_fixed)}")
    if model.singular:
        out.append("boundary (singular) fit: see the variance components above")
    out.append(f"optimizer: {model.opt}")
    return "\n".join(out)


def format_summary(model) -> str:
    parts = [header(model), scaled_residuals(model), random_effects(model), fixed_effects(model),
             fixed_correlation(model), notes(model)]
    return "\n\n".join(p for p in parts if p) + "\n"

