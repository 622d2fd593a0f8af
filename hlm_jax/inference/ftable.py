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

from .. import fixed
from ..report import format_pvalues, table_text
from .ddf import canonical_method, kenward_roger_pieces, satterthwaite_pieces
from .tails import f_sf
from .type3 import type3_contrasts


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
    if column in ("npar", "Res.Df", "Df", "NumDF"):
        return f"{int(value)}"
    if column.startswith("Pr("):
        return format_pvalues(np.array([value]))[0]
    if column in ("F value", "F"):
        return f"{value:.4f}"
    return f"{value:.5g}"


def marginal_table(model, ddf: str = "satterthwaite") -> FTable:
    """lmerTest's type III table (anova(m, type = 3)): each term tested by lmerTest's type III contrast
    (its columns made orthogonal to those of the terms containing it; see type3.py)."""
    contrasts = type3_contrasts(model.info)
    return _contrast_table(model, ddf, lambda term, mine: contrasts[term], "Type III")


def sequential_table(model, ddf: str | None = None) -> FTable:
    """lme4's anova(m) for one fit: npar, Sum Sq, Mean Sq and F value per term, in formula order.
    With ddf ("satterthwaite" or "kenward-roger") lmerTest's type I table instead: each term's
    contrast is its rows of the Cholesky factor of XᵀX (lmerTest's Doolittle rows), F and DenDF from
    Satterthwaite's method (lmerTest's contestMD) or Kenward-Roger's (pbkrtest's adjusted vcov, Lb_ddf)."""
    if ddf is not None:
        U = np.linalg.cholesky(fixed.gram(model.info.X)).T
        return _contrast_table(model, ddf, lambda term, mine: U[mine], "Type I")
    V = model.vcov.to_numpy()
    sigma2 = model.sigma ** 2
    U = np.linalg.cholesky(sigma2 * np.linalg.inv(V)).T  # R_X: R_XᵀR_X = σ² vcov⁻¹
    ss_columns = (U @ model.fixef.to_numpy()) ** 2
    rows = []
    for term, mine in _terms(model.info):
        ss = float(ss_columns[mine].sum())
        npar = int(mine.sum())
        rows.append((term, npar, ss, ss / npar, ss / npar / sigma2))
    table = pd.DataFrame([r[1:] for r in rows], index=[r[0] for r in rows],
                         columns=["npar", "Sum Sq", "Mean Sq", "F value"])
    return FTable(table, ["Analysis of Variance Table"])


def _terms(info):
    """(R's term label, mask of its kept columns) for each term but the intercept, in formula order."""
    for k, term in enumerate(info.fixed_terms):
        mine = info.fixed_assign == k
        if term != "(Intercept)" and mine.any():
            yield term, mine


def _contrast_table(model, ddf: str, contrast, kind: str) -> FTable:
    """F, NumDF, DenDF and Pr(>F) per term for the contrast rows `contrast(term label, mask of its columns)`."""
    method = canonical_method(ddf)
    pieces = satterthwaite_pieces(model) if method == "satterthwaite" else kenward_roger_pieces(model)
    beta = model.fixef.to_numpy()
    sigma2 = model.sigma ** 2
    rows = []
    for term, mine in _terms(model.info):
        L = contrast(term, mine)
        if method == "satterthwaite":
            F, q, den = _satterthwaite_f(L, beta, pieces)
        else:
            Lb = L @ beta
            q = np.linalg.matrix_rank(L)
            F, den = float(Lb @ np.linalg.solve(L @ pieces.vcov_adj @ L.T, Lb)) / q, pieces.df(L)
        rows.append((term, F * sigma2 * q, F * sigma2, q, den, F, float(f_sf(F, q, den))))
    table = pd.DataFrame([r[1:] for r in rows], index=[r[0] for r in rows],
                         columns=["Sum Sq", "Mean Sq", "NumDF", "DenDF", "F value", "Pr(>F)"])
    name = "Satterthwaite's" if method == "satterthwaite" else "Kenward-Roger's"
    return FTable(table, [f"{kind} Analysis of Variance Table with {name} method"])


def _satterthwaite_f(L: np.ndarray, beta: np.ndarray, pieces) -> tuple[float, int, float]:
    """lmerTest's contestMD: F over the eigen-directions of L V Lᵀ, each with its Satterthwaite df ν_m,
    and DenDF = 2E/(E − q) with E = Σ ν_m/(ν_m − 2) (2 when some ν_m ≤ 2; ν itself when q = 1)."""
    w, P = np.linalg.eigh(L @ pieces.point.vcov @ L.T)
    keep = w > 1e-8 * max(w.max(), 0.0)
    PL = P[:, keep].T @ L
    q = int(keep.sum())
    F = float(((PL @ beta) ** 2 / w[keep]).sum() / q)
    grads = np.stack([((PL @ pieces.jac[:, :, k]) * PL).sum(axis=1) for k in range(pieces.jac.shape[2])], axis=1)
    nu = 2.0 * w[keep] ** 2 / np.einsum("mk,kl,ml->m", grads, pieces.A, grads)
    if q == 1:
        return F, q, float(nu[0])
    if np.any(nu <= 2):
        return F, q, 2.0
    E = float((nu / (nu - 2)).sum())
    return F, q, 2.0 * E / (E - q)
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
        p = float(f_sf(f, abs(d), df[big])) if d != 0 else np.nan
        rows.append((df[i], rss[i], d, ss, f, p))
    table = pd.DataFrame(rows, index=range(1, len(models) + 1),
                         columns=["Res.Df", "RSS", "Df", "Sum of Sq", "F", "Pr(>F)"])
    heading = ["Analysis of Variance Table", ""] + [f"Model {i + 1}: {m.formula}" for i, m in enumerate(models)]
    return FTable(table, heading)
