"""The deviance in (θ, σ), σ not profiled out (REML or ML), with its exact gradient and Hessian taken from the
profiled criterion's, and the statistics of a model with one fixed effect held: what the profile intervals
minimise, and the Hessian Satterthwaite's df and the variance parameters' SEs are built on.

With F_n(θ) the profiled criterion of n observations, d = n − reml·p the residual degrees of freedom and
ℓ(θ) = log r²(θ) (r² the penalised residual sum of squares at θ),

    F_n = log|L|² + reml·log|R_X|² + d (1 + log(2π e^ℓ / d)),
    D(θ, σ) = log|L|² + reml·log|R_X|² + e^ℓ/σ² + d log 2πσ² = F_n + d log d − d − dℓ + e^ℓ/σ² + 2d log σ.

ℓ comes from F at two observation counts, an identity in θ: with d' = 2n − reml·p,
F_{2n} − F_n = n(1 + log 2π + ℓ) − d' log d' + d log d. So D, ∇D and ∇²D follow from F's at n and 2n, which
for one grouping factor are closed forms over per-group sums (`fit.gaussian_derivatives`, the fit's own);
batched over the two counts, the per-group work is done once. A program built on these traces and compiles in
a fraction of the time autodiff through the decomposition takes.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from ..fit import crossed_derivatives, crossed_objective, gaussian_derivatives, gaussian_objective
from ..likelihood.lmm import Stats
from ._likelihood import n_and_p

ML = 0.0


def _with_n(stats, n):
    """`stats` with n observations (the count enters the criterion only through n)."""
    if isinstance(stats, Stats):
        return dataclasses.replace(stats, n=n)
    return dataclasses.replace(stats, first=dataclasses.replace(stats.first, n=n))


def _criterion(theta, stats, reml):
    """F_n(θ), the profiled criterion (REML: reml = 1, ML: 0)."""
    if isinstance(stats, Stats):
        return gaussian_objective(theta, stats, reml)
    return crossed_objective(theta, stats, reml)


def _criterion_derivatives(theta, stats, reml):
    """(F_n, ∇F_n, ∇²F_n) at θ: closed forms for one grouping factor, autodiff for several."""
    if isinstance(stats, Stats):
        return gaussian_derivatives(theta, stats, reml)
    return crossed_derivatives(theta, stats, reml)


def _at_two_counts(fun, theta, stats, reml):
    """fun(θ, stats, reml) at n and at 2n observations, stacked (only the parts that depend on n are batched)."""
    n = n_and_p(stats)[0]
    return jax.vmap(lambda m: fun(theta, _with_n(stats, m), reml))(jnp.stack([n, 2.0 * n]))


def _log_r2(F, n, dof):
    """ℓ = log r² from F at n and 2n, `dof` = d = n − reml·p (see the module docstring)."""
    dof2 = dof + n
    return (F[1] - F[0] + dof2 * jnp.log(dof2) - dof * jnp.log(dof)) / n - 1.0 - jnp.log(2.0 * jnp.pi)


def _dof(stats, reml):
    """(n, d = n − reml·p)."""
    n, p = n_and_p(stats)
    return n, n - reml * p


def deviance(varpar, stats, reml=ML):
    """The deviance at θ = varpar[:-1], σ = varpar[-1] (ML by default; as `ddf.unprofiled_deviance`)."""
    theta, sigma = varpar[:-1], varpar[-1]
    reml = jnp.asarray(reml, varpar.dtype)
    F, (n, d) = _at_two_counts(_criterion, theta, stats, reml), _dof(stats, reml)
    ell = _log_r2(F, n, d)
    return F[0] + d * jnp.log(d) - d - d * ell + jnp.exp(ell) / sigma ** 2 + 2.0 * d * jnp.log(sigma)


def deviance_derivatives(varpar, stats, reml=ML):
    """(D, ∇D, ∇²D) in varpar = (θ, σ), exact (ML by default): with e = r²/σ² and d = n − reml·p,
    ∇_θD = ∇F + (e − d)∇ℓ, ∇²_θθD = ∇²F + (e − d)∇²ℓ + e∇ℓ∇ℓᵀ, ∂_σD = 2(d − e)/σ, ∂²_σσD = (6e − 2d)/σ²,
    ∂²_θσD = −2e∇ℓ/σ."""
    theta, sigma = varpar[:-1], varpar[-1]
    reml = jnp.asarray(reml, varpar.dtype)
    (F, g, H), (n, d) = _at_two_counts(_criterion_derivatives, theta, stats, reml), _dof(stats, reml)
    ell, g_ell, H_ell = _log_r2(F, n, d), (g[1] - g[0]) / n, (H[1] - H[0]) / n
    e = jnp.exp(ell) / sigma ** 2
    value = F[0] + d * jnp.log(d) - d - d * ell + e + 2.0 * d * jnp.log(sigma)
    grad = jnp.append(g[0] + (e - d) * g_ell, 2.0 * (d - e) / sigma)
    cross = -2.0 * e / sigma * g_ell
    hess = jnp.block([[H[0] + (e - d) * H_ell + e * jnp.outer(g_ell, g_ell), cross[:, None]],
                      [cross[None, :], ((6.0 * e - 2.0 * d) / sigma ** 2)[None, None]]])
    return value, grad, hess


def held_column(stats, column, delta):
    """Statistics of the model with β_j held at β₀_j + delta, `column` the one-hot (p,) of j (all 0: none held):
    the response y − delta·x_j, and x_j replaced by a unit column orthogonal to y, Z and the other columns (its
    coefficient is 0), so the ML deviance is the profile's at β_j held and every shape stays the same."""
    keep = 1.0 - column
    if not isinstance(stats, Stats):
        return dataclasses.replace(stats, first=held_column(stats.first, column, delta), Z2tX=stats.Z2tX * keep,
                                   Z2ty=stats.Z2ty - delta * (stats.Z2tX @ column))
    XtX_j = stats.XtX @ column
    return dataclasses.replace(
        stats, ZtX=stats.ZtX * keep, Zty=stats.Zty - delta * (stats.ZtX @ column),
        XtX=stats.XtX * keep[:, None] * keep[None, :] + jnp.diag(column), Xty=(stats.Xty - delta * XtX_j) * keep,
        yty=stats.yty - 2.0 * delta * (stats.Xty @ column) + delta ** 2 * (column @ XtX_j))
