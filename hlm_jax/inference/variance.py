"""Variance decomposition: intraclass correlation and Nakagawa-Schielzeth R² for linear mixed models.

Following Nakagawa, Johnson & Schielzeth (2017, J. R. Soc. Interface 14: 20170213):

    σ²_f  = var(Xβ̂)                            (variance of the fixed-effect predictions; n − 1 divisor)
    σ²_t  = mean over rows of z_iᵀ Σ_t z_i       (each random term t; Σ_t its covariance, z_i its columns)
    σ²_ε  = σ̂²

    R²_marginal    = σ²_f / (σ²_f + Σσ²_t + σ²_ε)
    R²_conditional = (σ²_f + Σσ²_t) / (σ²_f + Σσ²_t + σ²_ε)
    ICC_adjusted   = Σσ²_t / (Σσ²_t + σ²_ε)      (the seeds' ρ = g00 / (g00 + σ²) for a random intercept)
    ICC_conditional = Σσ²_t / (σ²_f + Σσ²_t + σ²_ε)

For a random intercept z_i = 1 and σ²_t is its variance; with random slopes σ²_t depends on
the spread of the slope variables (Johnson 2014), as in MuMIn's r.squaredGLMM and
performance's r2_nakagawa/icc.
"""
from __future__ import annotations

import numpy as np
import pandas as pd


def _term_columns(model):
    """(grouping factor, term label, Z_t (n × q_t), Σ_t) per random term, in the model's term order."""
    info = model.info
    factors = getattr(info, "factors", None)
    covs = model.term_covariances()
    out = []
    offset = 0
    for term, (label, _, cov) in zip(info.terms, covs):
        if factors is None:
            Z = np.asarray(info.Z)[:, offset:offset + term.q]
            offset += term.q
        else:
            block = factors[getattr(term, "block", 0)]
            start = getattr(term, "offset", 0)
            Z = np.asarray(block.Z)[:, start:start + term.q]
        out.append((term.factor, label, Z, cov))
    return out


def variance_components(model) -> pd.DataFrame:
    """Variance of the fixed part, of each grouping factor's random part, and of the residual,
    with each one's share of the total (the pieces of `r2` and `icc`)."""
    eta = np.asarray(model.info.X) @ model.fixef.to_numpy()
    rows = {"fixed": float(np.var(eta, ddof=1)) if len(eta) > 1 else 0.0}
    for factor, _, Z, cov in _term_columns(model):
        rows[factor] = rows.get(factor, 0.0) + float(np.mean(np.einsum("ni,ij,nj->n", Z, cov, Z)))
    rows["residual"] = model.sigma ** 2
    table = pd.DataFrame({"variance": pd.Series(rows)})
    table["proportion"] = table["variance"] / table["variance"].sum()
    return table


def r2(model) -> pd.Series:
    """Nakagawa-Schielzeth marginal (fixed effects) and conditional (fixed + random) R²."""
    model.require_plain("r2()")
    vc = variance_components(model)["variance"]
    total = vc.sum()
    random = vc.drop(["fixed", "residual"]).sum()
    return pd.Series({"marginal": vc["fixed"] / total, "conditional": (vc["fixed"] + random) / total}, name="r2")


def icc(model) -> pd.Series:
    """Intraclass correlation: `adjusted` = random / (random + residual), `conditional` also counts the
    fixed-effect variance in the denominator, then each grouping factor's own share of
    random + residual (with nested factors, a level's ICC is the sum of its share and those above it)."""
    model.require_plain("icc()")
    vc = variance_components(model)["variance"]
    random_parts = vc.drop(["fixed", "residual"])
    random = random_parts.sum()
    out = {"adjusted": random / (random + vc["residual"]),
           "conditional": random / vc.sum()}
    for factor, value in random_parts.items():
        out[factor] = value / (random + vc["residual"])
    return pd.Series(out, name="icc")
