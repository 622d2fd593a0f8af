"""Standard errors of the variance parameters from the exact autodiff Hessian of the criterion.

The criterion (REML or ML, −2 log-likelihood, σ not profiled out) is written as a function of
ψ = (log sd, atanh correlation per random term; the residual structure's η; log σ). With
cov(ψ̂) = 2H⁻¹ (H its Hessian at ψ̂), the SE on the users' scale (sd, correlation, Phi, ratio,
σ) is |d value/dψ|·SE(ψ) (the delta method); the table names the transformation used.
This is nlme's apVar (which takes a finite-difference Hessian), with exact derivatives.
"""
from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from ..compile_time import ONCE
from ..likelihood import lmm
from ..precision import float64
from ..report import with_timing
from ..residual_fit import residual_data, whitened_stats


def _theta_from_sd_cor(values: jax.Array, sigma: jax.Array, layout) -> jax.Array:
    """θ from the reported sds and correlations (each term's `summary_pairs`, term by term): Λ of a
    term is chol(cov)/σ, and θ are its entries (structures whose θ are entries of Λ)."""
    rows, cols = layout.single_entries()
    theta, k = jnp.zeros(layout.size, values.dtype), 0
    for t, s, index in zip(layout.terms, layout.structures, layout.index):
        pairs = s.summary_pairs()
        part = values[k:k + len(pairs)]
        k += len(pairs)
        sd = jnp.ones(s.q, values.dtype)
        corr = jnp.eye(s.q, dtype=values.dtype)
        for v, (i, j) in zip(part, pairs):
            sd = sd.at[i].set(v) if i == j else sd
            corr = corr if i == j else corr.at[i, j].set(v).at[j, i].set(v)
        lam = jnp.linalg.cholesky(corr * sd[:, None] * sd[None, :]) / sigma
        theta = theta.at[jnp.array(index)].set(lam[rows[list(index)] - t.offset, cols[list(index)] - t.offset])
    return theta


def deviance(psi, data, reml, layout, diagonal):
    """−2 log-likelihood (REML: restricted) at ψ, σ kept as a parameter."""
    n_vc = len(diagonal)
    vc = jnp.where(jnp.asarray(diagonal), jnp.exp(psi[:n_vc]), jnp.tanh(psi[:n_vc]))
    eta, sigma = psi[n_vc:-1], jnp.exp(psi[-1])
    stats, logdet_R = whitened_stats(eta, data)
    pls = lmm.decompose(_theta_from_sd_cor(vc, sigma, layout), stats)
    dof = stats.n - reml * stats.p
    return (pls.logdet_L + reml * pls.logdet_RX + dof * jnp.log(2.0 * jnp.pi * sigma ** 2) + pls.r2 / sigma ** 2
            + logdet_R)


@partial(jax.jit, static_argnames=("reml", "layout", "diagonal"), compiler_options=ONCE)
def deviance_hessian(psi, data, reml: float, layout, diagonal: tuple[bool, ...]):
    """The Hessian of `deviance` in ψ, compiled once per model structure (not once per call)."""
    return jax.hessian(deviance)(psi, data, reml, layout, diagonal)


@with_timing
@float64
def variance_table(model) -> pd.DataFrame:
    """Estimates and SEs of the random-effect sds and correlations, the residual structure's parameters
    and σ, on the users' scale, with the transformation each SE went through (columns estimate,
    std_error, scale)."""
    info = model.info
    if len(info.factors) > 1:
        raise NotImplementedError("variance-parameter SEs are computed for one grouping factor")
    layout = model.layout
    data = model.residual.data if model.residual is not None else residual_data(model.design, {}, None, None)
    eta = np.zeros(0) if model.residual is None else np.asarray(model.residual.eta)
    diagonal = np.array([i == j for s in layout.structures for i, j in s.summary_pairs()])
    vc = layout.sd_cor(model.theta, model.sigma)[0]
    with np.errstate(divide="ignore"):
        psi = np.concatenate([np.where(diagonal, np.log(np.abs(vc)), np.arctanh(np.clip(vc, -1, 1))), eta,
                              [np.log(model.sigma)]])
    H = deviance_hessian(jnp.asarray(psi), data, float(model.reml), layout, tuple(bool(d) for d in diagonal))
    se_psi = np.sqrt(np.diag(2.0 * np.linalg.inv(np.asarray(H))))
    residual = data.residual
    nat = np.asarray(residual.natural(jnp.asarray(eta)))
    slope_eta = np.asarray(jax.jacfwd(residual.natural)(jnp.asarray(eta))).reshape(len(eta), len(eta)).diagonal() \
        if len(eta) else np.zeros(0)
    slope = np.concatenate([np.where(diagonal, vc, 1.0 - vc ** 2), slope_eta, [model.sigma]])
    names = layout.varcorr_names() + list(residual.names) + ["sigma"]
    scales = ["log" if d else "atanh" for d in diagonal] + list(residual.transforms) + ["log"]
    return pd.DataFrame({"estimate": np.concatenate([vc, nat, [model.sigma]]), "std_error": np.abs(slope) * se_psi,
                         "scale": scales}, index=pd.Index(names, name="parameter"))
