"""Standard errors of the variance parameters from the exact autodiff Hessian of the criterion.

The criterion (REML or ML, −2 log-likelihood, σ not profiled out) is written as a function of
ψ = (log sd, atanh correlation per random term; the residual structure's η; log σ). With
cov(ψ̂) = 2H⁻¹ (H its Hessian at ψ̂), the SE on the users' scale (sd, correlation, Phi, ratio,
σ) is |d value/dψ|·SE(ψ) (the delta method); the table names the transformation used.
This is nlme's apVar (which takes a finite-difference Hessian), with exact derivatives.
"""
from __future__ import annotations


import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from ..compile_time import ONCE, Program
from ..likelihood import linalg, lmm
from ..precision import float64
from ..report import with_timing
from ..residual_fit import residual_data, whitened_stats
from ._likelihood import model_stats
from .ddf import variance_derivatives


def sd_cor_spec(layout) -> tuple:
    """What `_theta_from_sd_cor` reads of a layout, per term: q, its summary pairs and (θ index, row, col of
    the term's Λ) per θ element; hashable and free of names and level counts, so that models of the same
    structure share the programs it is a static argument of."""
    rows, cols = layout.single_entries()
    return tuple((s.q, tuple((int(i), int(j)) for i, j in s.summary_pairs()),
                  tuple((int(e), int(rows[e] - t.offset), int(cols[e] - t.offset)) for e in index))
                 for t, s, index in zip(layout.terms, layout.structures, layout.index))


def _theta_from_sd_cor(values: jax.Array, sigma: jax.Array, spec: tuple) -> jax.Array:
    """θ from the reported sds and correlations (each term's summary pairs, term by term; `spec` from
    `sd_cor_spec`): Λ of a term is chol(cov)/σ, and θ are its entries. Each term's sds and correlation matrix
    come from its values by constant selections (a few array operations per term, not one per entry: the
    program is differentiated twice, and its tracing time grows with its operations)."""
    parts, order, k = [], [], 0
    for q, pairs, entries in spec:
        pick_sd, pick_cor = np.zeros((q, len(pairs))), np.zeros((len(pairs), q, q))
        for e, (i, j) in enumerate(pairs):
            if i == j:
                pick_sd[i, e] = 1.0
            else:
                pick_cor[e, i, j] = pick_cor[e, j, i] = 1.0
        part = values[k:k + len(pairs)]
        k += len(pairs)
        sd = pick_sd @ part + (1.0 - pick_sd.sum(axis=1))
        corr = jnp.eye(q, dtype=values.dtype) + jnp.tensordot(part, pick_cor, 1)
        lam = linalg.cholesky(corr * sd[:, None] * sd[None, :]) / sigma
        index, rows, cols = (list(x) for x in zip(*entries))
        parts.append(lam[rows, cols])
        order += index
    return jnp.concatenate(parts)[np.argsort(order)]


def deviance(psi, data, reml, spec, diagonal):
    """−2 log-likelihood (REML: restricted) at ψ, σ kept as a parameter."""
    n_vc = len(diagonal)
    vc = jnp.where(jnp.asarray(diagonal), jnp.exp(psi[:n_vc]), jnp.tanh(psi[:n_vc]))
    eta, sigma = psi[n_vc:-1], jnp.exp(psi[-1])
    stats, logdet_R = whitened_stats(eta, data)
    pls = lmm.decompose(_theta_from_sd_cor(vc, sigma, spec), stats)
    dof = stats.n - reml * stats.p
    return (pls.logdet_L + reml * pls.logdet_RX + dof * jnp.log(2.0 * jnp.pi * sigma ** 2) + pls.r2 / sigma ** 2
            + logdet_R)


def _deviance_hessian(psi, data, reml: float, spec: tuple, diagonal: tuple[bool, ...]):
    """The Hessian of `deviance` in ψ (models with a residual structure)."""
    return jax.hessian(deviance)(psi, data, reml, spec, diagonal)


# compiled once per model structure (not once per call), kept on disk for the next process
deviance_hessian = Program(_deviance_hessian, "residual_deviance_hessian", static_argnames=("reml", "spec", "diagonal"),
                           compiler_options=ONCE)


def _varpar(psi, spec, diagonal):
    """varpar = (θ, σ) at ψ = (log sd, atanh correlation, log σ) (no residual structure)."""
    vc = jnp.where(jnp.asarray(diagonal), jnp.exp(psi[:-1]), jnp.tanh(psi[:-1]))
    sigma = jnp.exp(psi[-1])
    return jnp.append(_theta_from_sd_cor(vc, sigma, spec), sigma)


def _varpar_jacobians(psi, spec: tuple, diagonal: tuple[bool, ...]):
    """∂varpar/∂ψ (m × k) and ∂²varpar/∂ψ² (m × k × k)."""

    def first(z):
        J = jax.jacfwd(_varpar)(z, spec, diagonal)
        return J, J

    second, J = jax.jacfwd(first, has_aux=True)(psi)
    return J, second


# the map has no data: a small program per structure, kept on disk for the next process
varpar_jacobians = Program(_varpar_jacobians, "varpar_jacobians", static_argnames=("spec", "diagonal"),
                           compiler_options=ONCE)


def _plain_hessian(model, psi, diagonal):
    """The Hessian of the deviance in ψ by the chain rule from its gradient and Hessian in (θ, σ), the
    program Satterthwaite's df take (`ddf.variance_derivatives`: one compile serves both)."""
    stats, _ = model_stats(model.design)
    varpar = jnp.asarray(np.append(model.theta, model.sigma))
    g, H, _ = (np.asarray(x) for x in variance_derivatives(varpar, stats, jnp.asarray(float(model.reml))))
    J, second = (np.asarray(x) for x in varpar_jacobians(jnp.asarray(psi), spec=sd_cor_spec(model.layout),
                                                         diagonal=diagonal))
    return J.T @ H @ J + np.tensordot(g, second, 1)  # numpy: each JAX operation here would compile a program


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
    flags = tuple(bool(d) for d in diagonal)
    if model.residual is None:
        H = _plain_hessian(model, psi, flags)
    else:
        H = deviance_hessian(jnp.asarray(psi), data, reml=float(model.reml), spec=sd_cor_spec(layout), diagonal=flags)
    se_psi = np.sqrt(np.diag(2.0 * np.linalg.inv(np.asarray(H))))
    residual = data.residual
    nat, slope_eta = np.zeros(0), np.zeros(0)
    if len(eta):  # (not run on empty arrays: each JAX operation would compile a program)
        nat = np.asarray(residual.natural(jnp.asarray(eta)))
        slope_eta = np.asarray(jax.jacfwd(residual.natural)(jnp.asarray(eta))).reshape(len(eta), len(eta)).diagonal()
    slope = np.concatenate([np.where(diagonal, vc, 1.0 - vc ** 2), slope_eta, [model.sigma]])
    names = layout.varcorr_names() + list(residual.names) + ["sigma"]
    scales = ["log" if d else "atanh" for d in diagonal] + list(residual.transforms) + ["log"]
    return pd.DataFrame({"estimate": np.concatenate([vc, nat, [model.sigma]]), "std_error": np.abs(slope) * se_psi,
                         "scale": scales}, index=pd.Index(names, name="parameter"))
