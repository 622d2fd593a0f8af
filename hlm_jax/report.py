"""Text and HTML reports of a fitted model, laid out as lme4 + lmerTest's print(summary(m)).

Numbers follow R's formatting rules: a column is formatted with common decimals, as few as show every
entry to `digits` significant digits (R's formatReal); coefficient tables follow printCoefmat (estimates,
standard errors and df rounded together, t values to 3 decimals, p values by format.pval); names in the
fixed-effect correlation matrix are shortened by R's abbreviate(). `with_timing` gives a fit's or a table's
result its `timing` (wall seconds, and the part of them spent compiling).
"""
from __future__ import annotations

import functools
import html
import math

import numpy as np
import pandas as pd

from .compile_time import timed

CORRELATION_LIMIT = 12  # lme4 prints the fixed-effect correlations only for p ≤ 12
STARS = ((0.001, "***"), (0.01, "**"), (0.05, "*"), (0.1, "."), (1.0, " "))
STAR_LEGEND = "Signif. codes:  0 ‘***’ 0.001 ‘**’ 0.01 ‘*’ 0.05 ‘.’ 0.1 ‘ ’ 1"
EPS = float(np.finfo(float).eps)


# ---- R's number formatting ------------------------------------------------------------------------

def table_text(rows: list[list[str]], align: list[str], indent: str = "") -> str:
    """Columns separated by one space, each left ("l") or right ("r") aligned; trailing blanks cut."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(align))]
    lines = []
    for r in rows:
        cells = [c.ljust(w) if a == "l" else c.rjust(w) for c, w, a in zip(r, widths, align)]
        lines.append((indent + " ".join(cells)).rstrip())
    return "\n".join(lines)


def _significant_needed(x: float, digits: int) -> int:
    """Fewest significant digits that show x as it is at `digits` significant digits."""
    target = float(f"{x:.{digits - 1}e}")
    return next(s for s in range(1, digits + 1) if float(f"{x:.{s - 1}e}") == target)


def _decimals_needed(x: float, digits: int) -> int:
    """Decimals that show x to `digits` significant digits, trailing zeros dropped (R's formatReal)."""
    if not np.isfinite(x) or x == 0:
        return 0
    rounded = float(f"{x:.{digits - 1}e}")
    return max(0, _significant_needed(x, digits) - 1 - math.floor(math.log10(abs(rounded))))


def format_real(values, digits: int) -> list[str]:
    """R's format(x, digits=): fixed notation with the decimals the most demanding entry needs,
    right-aligned to a common width."""
    values = np.asarray(values, dtype=float)
    decimals = max([_decimals_needed(v, digits) for v in values] + [0])
    text = [f"{round(v, decimals) + 0.0:.{decimals}f}" if np.isfinite(v)  # + 0.0: no "-0.000", as R
            else ("NaN" if np.isnan(v) else ("Inf" if v > 0 else "-Inf")) for v in values]
    width = max(len(t) for t in text) if text else 0
    return [t.rjust(width) for t in text]


def format_scientific(values, digits: int) -> list[str]:
    """R's scientific format with a common number of mantissa digits (at most `digits`)."""
    sig = max(_significant_needed(v, digits) for v in values)
    return [f"{v:.{sig - 1}e}" for v in values]


def format_pvalues(p, digits: int = 3) -> list[str]:
    """R's format.pval(p, digits, eps = .Machine$double.eps): fixed notation from 1e-3 up,
    scientific below, "< 2e-16" below machine epsilon."""
    p = np.asarray(p, dtype=float)
    out = np.array(["NA"] * len(p), dtype=object)
    finite = np.isfinite(p)
    small = finite & (p < EPS)
    rest = finite & ~small
    expo = np.floor(np.log10(np.where(p[rest] > 0, p[rest], 1e-50)))
    fixed = (expo >= -3) | (p[rest] == 0)
    idx = np.flatnonzero(rest)
    if fixed.any():
        out[idx[fixed]] = [t.strip() for t in format_real(p[idx[fixed]], digits)]
    if (~fixed).any():
        out[idx[~fixed]] = format_scientific(p[idx[~fixed]], digits)
    if small.any():
        widest = max([len(s) for s in out[rest]] + [0])
        eps_digits = max(1, digits - 2)
        if rest.any() and eps_digits > 1 and eps_digits + 6 > widest:
            eps_digits = max(1, widest - 7)
        sep = "" if eps_digits == 1 and (not rest.any() or widest <= 6) else " "
        out[small] = "<" + sep + f"{EPS:.{eps_digits - 1}e}"
    return list(out)


def significance_stars(p) -> list[str]:
    """R's significance codes (***, **, *, ., blank)."""
    return [next(s for cut, s in STARS if v <= cut) if np.isfinite(v) else "" for v in np.asarray(p, float)]


def abbreviate(names: list[str], minlength: int) -> list[str]:
    """R's abbreviate(names, minlength) (method "left.kept"): drop lower-case vowels from the right, then
    lower-case letters, then any character, never the first; names that collide are lengthened."""
    out = [_abbreviate_one(n, minlength) for n in names]
    length = minlength
    while len(set(out)) < len(out) and length < max(len(n) for n in names):
        length += 1
        seen = pd.Series(out).duplicated(keep=False).to_numpy()
        out = [_abbreviate_one(n, length) if dup else o for n, o, dup in zip(names, out, seen)]
    return out


def _abbreviate_one(name: str, minlength: int) -> str:
    """R's stripchars() for one name without spaces."""
    chars = list(name.strip())
    if len(chars) <= minlength:
        return "".join(chars)

    def last(i):
        return i == len(chars) - 1

    rules = [lambda c, i: c in "aeiou" and last(i), lambda c, i: c in "aeiou",
             lambda c, i: c.islower() and last(i), lambda c, i: c.islower(), lambda c, i: not c.isspace()]
    for rule in rules:
        i = len(chars) - 1
        while i > 0:
            if rule(chars[i], i):
                del chars[i]
                if len(chars) <= minlength:
                    return "".join(chars)
            i -= 1
    return "".join(chars)


# ---- the summary's blocks -------------------------------------------------------------------------

def header(model, ddf: str | None = None) -> str:
    """Title, formula, missing rows and the criterion (REML) or lme4's AIC/BIC/logLik/deviance/df.resid line (ML)."""
    how = "REML" if model.reml else "maximum likelihood"
    first = f"Linear mixed model fit by {how} (hlm_jax)"
    if ddf:
        first += f". t-tests use {'Satterthwaite' if ddf == 'satterthwaite' else 'Kenward-Roger'}'s method"
    lines = [first, f"Formula: {model.formula}"]
    if model.info.n_dropped_missing:
        lines.append(f"({model.info.n_dropped_missing} observations deleted due to missingness)")
    lines.append("")
    if model.reml:
        lines.append(f"REML criterion at convergence: {model.objective:.1f}")
    else:
        stats = [("AIC", f"{model.aic:.1f}"), ("BIC", f"{model.bic:.1f}"), ("logLik", f"{model.loglik:.1f}"),
                 ("deviance", f"{model.objective:.1f}"), ("df.resid", f"{model.nobs - model.n_params:d}")]
        width = max(len(t) for pair in stats for t in pair)  # a named vector prints in one common width
        lines += [" ".join(k.rjust(width) for k, _ in stats), " ".join(v.rjust(width) for _, v in stats)]
    return "\n".join(lines)


def zapsmall(x, digits: int) -> np.ndarray:
    """R's zapsmall(x, digits): round to `digits` significant digits of the largest |x| (R 4.2 rounds
    digits − log10(max|x|) to the nearest integer)."""
    x = np.asarray(x, dtype=float)
    mx = np.max(np.abs(x))
    return np.round(x, max(0, int(round(digits - math.log10(mx)))) if mx > 0 else digits)


def scaled_residuals(model, digits: int = 4) -> str:
    """lme4's quantiles of the scaled (Pearson) residuals (zapsmall to digits + 1, printed with `digits`)."""
    r = model.residuals(type="pearson").to_numpy()
    qs = format_real(zapsmall(np.quantile(r, [0, 0.25, 0.5, 0.75, 1]), digits + 1), digits)
    return "Scaled residuals:\n" + table_text([["Min", "1Q", "Median", "3Q", "Max"], qs], ["r"] * 5)


def random_effects(model, digits: int = 4) -> str:
    """lme4's formatVC: variances and sds with common decimals (`digits` significant), correlations to
    two decimals in as many columns as the largest term needs (no Corr column without correlations)."""
    terms = model.term_covariances()
    variances = [cov[i, i] for _, cols, cov in terms for i in range(len(cols))] + [model.sigma ** 2]
    var_text = format_real(variances, digits)
    sd_text = format_real(np.sqrt(np.maximum(variances, 0.0)), digits)
    n_corr = max(len(cols) for _, cols, _ in terms) - 1
    rows = [["Groups", "Name", "Variance", "Std.Dev."] + (["Corr"] + [""] * (n_corr - 1) if n_corr else [])]
    k = 0
    for name, cols, cov in terms:
        sd = np.sqrt(np.diag(cov))
        for i, c in enumerate(cols):
            corr = [f"{cov[i, j] / (sd[i] * sd[j]):.2f}" if sd[i] * sd[j] > 0 else "NaN" for j in range(i)]
            rows.append([name if i == 0 else "", c, var_text[k], sd_text[k]] + corr + [""] * (n_corr - len(corr)))
            k += 1
    rows.append(["Residual", "", var_text[k], sd_text[k]] + [""] * n_corr)
    corr_width = max([len(r[j]) for r in rows[1:] for j in range(4, 4 + n_corr)] + [0])
    for r in rows[1:]:
        r[4:] = [c.rjust(corr_width) if c else "" for c in r[4:]]
    groups = ", ".join(f"{k}, {v}" for k, v in model.ngroups.items())
    return ("Random effects:\n" + table_text(rows, ["l"] * len(rows[0]), indent=" ")
            + f"\nNumber of obs: {model.nobs}, groups:  {groups}")


def coefficient_rows(table: pd.DataFrame, digits: int = 4, stars: bool = False) -> list[list[str]]:
    """R's printCoefmat on (estimate, std_error[, df], statistic[, p_value]): header row, then one per term."""
    has_df = "df" in table.columns
    cs = ["estimate", "std_error"] + (["df"] if has_df else [])
    values = table[cs].to_numpy(float)
    nonzero = np.abs(values[np.isfinite(values) & (values != 0)])
    decimals = max(1, digits - (1 + math.floor(math.log10(nonzero.min())))) if nonzero.size else 1
    cs_text = np.array(format_real(np.round(values, decimals).ravel(), digits)).reshape(values.shape)
    t_text = format_real(np.round(table["statistic"].to_numpy(float), max(1, min(5, digits - 1))), digits)
    head = ["", "Estimate", "Std. Error"] + (["df"] if has_df else []) + ["t value"]
    columns = [cs_text[:, j] for j in range(len(cs))] + [t_text]
    if "p_value" in table.columns:
        head.append("Pr(>|t|)")
        columns.append(format_pvalues(table["p_value"].to_numpy(float), max(1, min(5, digits - 1))))
        if stars:
            head.append("")
            marks = significance_stars(table["p_value"])
            columns.append([m.ljust(3) for m in marks])
    return [head] + [[term] + [c[i] for c in columns] for i, term in enumerate(table["term"])]


def residual_structure(model) -> str:
    """nlme's lines for the residual structure: its kind, then the parameter estimates."""
    if getattr(model, "residual", None) is None:
        return ""
    res = model.residual.residual
    values = model.residual_params
    lines = []
    if res.correlation is not None:
        k = res.n_cor
        lines.append(f"Correlation structure: {res.correlation}")
        lines.append(table_text([list(values.index[:k]), [f"{v:.6g}" for v in values.iloc[:k]]], ["r"] * k))
    if res.variance is not None:
        v = values.iloc[res.n_cor:]
        names, shown = list(v.index), [f"{x:.6g}" for x in v]
        if hasattr(res.variance, "levels"):
            names, shown = [res.variance.levels[0]] + names, ["1"] + shown
        lines.append(f"Variance function: {res.variance}")
        lines.append(table_text([names, shown], ["r"] * len(names)))
    return "\n".join(lines)


def fixed_effects(table: pd.DataFrame, stars: bool = False) -> str:
    """The "Fixed effects:" block (printCoefmat), with R's legend when stars are shown."""
    rows = coefficient_rows(table, stars=stars)
    text = "Fixed effects:\n" + table_text(rows, ["l"] + ["r"] * (len(rows[0]) - 1))
    if stars and "p_value" in table.columns:
        text += "\n---\n" + STAR_LEGEND
    return text


def fixed_correlation(model, show: bool | None = None) -> str:
    """lme4's "Correlation of Fixed Effects" (rows abbreviated to 11 characters, columns to 6); by default
    (show=None) replaced by a note when p > 12, as lme4 does; show=False leaves it out."""
    names = list(model.fixef.index)
    p = len(names)
    if p < 2 or show is False:
        return ""
    if p > CORRELATION_LIMIT and show is None:
        return (f"Correlation matrix not shown by default, as p = {p} > {CORRELATION_LIMIT}.\n"
                "Use m.summary(correlation=True) or m.vcov if you need it")
    V = model.vcov.to_numpy()
    sd = np.sqrt(np.diag(V))
    C = np.round(V / np.outer(sd, sd), 3)
    cells = np.array(format_real(C.ravel(), 3)).reshape(C.shape)
    rows_names, col_names = abbreviate(names, 11), abbreviate(names, 6)
    rows = [[""] + col_names[:-1]]
    for i in range(1, p):
        rows.append([rows_names[i]] + [cells[i, j] for j in range(i)] + [""] * (p - 1 - i))
    return "Correlation of Fixed Effects:\n" + table_text(rows, ["l"] * p)


def notes(model) -> str:
    """Dropped columns, the singular-fit note and the optimiser's record."""
    out = []
    if model.info.dropped_fixed:
        out.append(f"fixed-effect model matrix is rank deficient so dropping {len(model.info.dropped_fixed)} "
                   f"columns / coefficients: {', '.join(model.info.dropped_fixed)}")
    if model.singular:
        out.append("boundary (singular) fit: see the variance components above")
    out.append(f"optimizer: {model.opt}")
    return "\n".join(out)


def format_summary(model, coefficients: pd.DataFrame, ddf: str | None = None, stars: bool = False,
                   correlation: bool | None = None) -> str:
    """The whole summary; `coefficients` is the fixed-effect table (with df and p_value when `ddf`)."""
    parts = [header(model, ddf), scaled_residuals(model), random_effects(model), residual_structure(model),
             fixed_effects(coefficients, stars), fixed_correlation(model, correlation), notes(model)]
    return "\n\n".join(p for p in parts if p) + "\n"


# ---- HTML (notebooks) -----------------------------------------------------------------------------

def html_block(title: str, body: str) -> str:
    """A bold title above an HTML body."""
    return f"<p><b>{html.escape(title)}</b></p>{body}"


def html_frame(frame: pd.DataFrame, digits: int = 4) -> str:
    """A table as HTML with `digits` significant digits."""
    return frame.to_html(float_format=lambda v: f"{v:.{digits}g}", na_rep="", border=0)


def html_model(model, coefficients: pd.DataFrame) -> str:
    """A fitted model as HTML: header, variance components and fixed effects as tables."""
    how = "REML" if model.reml else "maximum likelihood"
    crit = (f"REML criterion {model.objective:.2f}" if model.reml
            else f"AIC {model.aic:.2f}, BIC {model.bic:.2f}, logLik {model.loglik:.2f}, deviance {model.objective:.2f}")
    groups = ", ".join(f"{k}: {v}" for k, v in model.ngroups.items())
    head = (f"<p><b>Linear mixed model fit by {how}</b> (hlm_jax)<br><code>{html.escape(model.formula)}</code><br>"
            f"{crit}; {model.nobs} observations; groups {html.escape(groups)}"
            f"{'; <b>singular fit</b>' if model.singular else ''}"
            f"{'' if model.converged else '; <b>not converged</b>'}</p>")
    varcorr = model.varcorr.rename(columns={"vcov": "variance/cov", "sdcor": "sd/cor"}).fillna("")
    return (head + html_block("Random effects", html_frame(varcorr, 5))
            + html_block("Fixed effects", html_frame(coefficients.set_index("term"), 5)))


def with_timing(call):
    """`call` whose result carries `timing` (`seconds`, `compile_s`, `run_s` of the whole call, see
    `compile_time.timed`): an attribute, or `.attrs["timing"]` of a DataFrame, so a first call shows its compile."""

    @functools.wraps(call)
    def timed_call(*args, **kwargs):
        with timed() as timing:
            result = call(*args, **kwargs)
        if isinstance(result, pd.DataFrame):
            result.attrs["timing"] = timing
        else:
            result.timing = timing
        return result

    return timed_call
