"""Likelihood-ratio tests between nested mixed models, laid out as lme4's anova(m0, m1, ...).

As lme4 (refit = TRUE), REML fits are refitted by maximum likelihood before they are
compared, and the table says so: REML criteria of models with different fixed effects
are not comparable. Models are ordered by their number of parameters; each row is
tested against the row above it.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ..precision import float64
from ..report import html_block, html_frame, table_text, with_timing
from .ftable import FTable, lm_table, marginal_table, sequential_table
from .tails import chi2_sf


class DifferentDataError(ValueError):
    """Models compared by a likelihood-ratio test were fitted to different observations."""


@dataclass
class AnovaResult:
    """lme4's anova table (`table`: npar, AIC, BIC, logLik, deviance, Chisq, Df, p per model)."""

    table: pd.DataFrame
    formulas: list[str]
    refit_ml: bool
    notes: list[str] = field(default_factory=list)

    def __getitem__(self, key):
        return self.table[key]

    @property
    def loc(self):
        return self.table.loc

    def __str__(self) -> str:
        lines = []
        if self.refit_ml:
            lines.append("refitting model(s) with ML (instead of REML)")
        lines.append("Models:")
        width = max(len(n) for n in self.table.index)
        for name, formula in zip(self.table.index, self.formulas):
            lines.append(f"{name.ljust(width)}: {formula}")
        rows = [["", "npar", "AIC", "BIC", "logLik", "deviance", "Chisq", "Df", "Pr(>Chisq)"]]
        for name, r in self.table.iterrows():
            tested = np.isfinite(r["Chisq"])
            rows.append([name, f"{int(r['npar'])}", f"{r['AIC']:.2f}", f"{r['BIC']:.2f}", f"{r['logLik']:.2f}",
                         f"{r['deviance']:.2f}" if np.isfinite(r["deviance"]) else "",
                         f"{r['Chisq']:.4f}" if tested else "", f"{int(r['Df'])}" if tested else "",
                         f"{r['p']:.4g}" if tested and np.isfinite(r["p"]) else ""])
        lines.append(table_text(rows, ["l"] + ["r"] * 8))
        lines += self.notes
        return "\n".join(lines) + "\n"

    __repr__ = __str__

    def _repr_html_(self) -> str:
        models = "<br>".join(f"<code>{n}: {f}</code>" for n, f in zip(self.table.index, self.formulas))
        title = "Likelihood-ratio tests" + (" (REML fits refitted with ML)" if self.refit_ml else "")
        return html_block(title, f"<p>{models}</p>" + html_frame(self.table.rename(columns={"p": "Pr(>Chisq)"}), 5)
                          + "".join(f"<p>{n}</p>" for n in self.notes))


def _same_data(models, names) -> None:
    first = models[0]
    for m, name in zip(models[1:], names[1:]):
        same_rows = (m.nobs == first.nobs and m.info.response == first.info.response
                     and np.array_equal(np.asarray(m.info.row_index), np.asarray(first.info.row_index))
                     and np.array_equal(m.info.y, first.info.y))
        if not same_rows:
            raise DifferentDataError(
                f"models {names[0]!r} and {name!r} were not fitted to the same data "
                f"({first.nobs} observations of {first.info.response!r} vs {m.nobs} of {m.info.response!r}); "
                "a likelihood-ratio test needs the same observations (drop rows with missing values in any "
                "model's variables before fitting all of them)")


def _least_squares(models) -> bool:
    """Whether every model is a least-squares fit (`hlm_jax.ols.LmModel`). The module is looked up, not
    imported: no LmModel exists before it is loaded, and importing it brings scipy.stats (0.8 s in a fresh
    process after a fit), which a first anova of a mixed model would otherwise wait for."""
    ols = sys.modules.get(f"{__package__.rpartition('.')[0]}.ols")
    return ols is not None and all(isinstance(m, ols.LmModel) for m in models)


@with_timing
@float64
def anova(*models, names: list[str] | None = None, refit: bool = True, ddf: str | None = None,
          type: int = 1) -> AnovaResult | FTable:
    """Likelihood-ratio tests of nested fits: hj.anova(m0, m1, ...); one fit gives lme4's sequential
    F table (hj.anova(m); with ddf="satterthwaite" or "kenward-roger" lmerTest's type I table with
    DenDF and Pr(>F); type=3: lmerTest's marginal tests); least-squares fits give R's F test (hj.anova(ols1, ols2)).

    REML fits are refitted by ML first (refit=False compares the REML criteria as they are,
    which is valid only when the fixed effects are the same). Raises DifferentDataError when the
    models were fitted to different observations.
    """
    if len(models) == 1 and isinstance(models[0], (list, tuple)):
        models = tuple(models[0])
    if models and _least_squares(models):
        if len(models) < 2:
            raise ValueError("anova() of least-squares fits compares two or more nested models")
        return lm_table(*models)
    if len(models) == 1:
        if type == 3:
            return marginal_table(models[0], ddf or "satterthwaite")
        return sequential_table(models[0], ddf)
    if len(models) < 2:
        raise ValueError("anova() takes one model (its F table) or two or more models to compare; got none")
    names = list(names) if names is not None else [f"m{i}" for i in range(len(models))]
    if len(names) != len(models):
        raise ValueError(f"{len(names)} names for {len(models)} models")
    _same_data(models, names)
    refit_ml = refit and any(m.reml for m in models)
    fits = [m.refit(REML=False) if (refit_ml and m.reml) else m for m in models]
    order = sorted(range(len(fits)), key=lambda i: fits[i].n_params)  # stable, as lme4's order(df)
    rows = []
    previous = None
    for i in order:
        m = fits[i]
        dev = m.objective if not m.reml else np.nan
        row = {"npar": m.n_params, "AIC": m.aic, "BIC": m.bic, "logLik": m.loglik, "deviance": dev,
               "Chisq": np.nan, "Df": np.nan, "p": np.nan}
        if previous is not None:
            chisq = 2.0 * (m.loglik - previous.loglik)
            df = m.n_params - previous.n_params
            row["Chisq"] = chisq
            row["Df"] = df
            row["p"] = float(chi2_sf(chisq, df)) if df > 0 else np.nan
        rows.append(row)
        previous = m
    table = pd.DataFrame(rows, index=[names[i] for i in order])
    table["npar"] = table["npar"].astype(int)
    notes = []
    if not refit_ml and any(m.reml for m in fits):
        notes.append("(REML criteria compared: valid only for models with the same fixed effects)")
    return AnovaResult(table, [models[i].formula for i in order], refit_ml, notes)
