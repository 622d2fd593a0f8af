"""The ML deviance in (θ, σ), σ not profiled out, with its exact gradient and Hessian taken from the profiled
criterion's, and the statistics of a model with one fixed effect held: what the profile intervals minimise.

With F_n(θ) the profiled ML deviance of n observations and ℓ(θ) = log r²(θ) (r² the penalised residual sum of
squares at θ),

    F_n = log|L|² + n (1 + log(2π e^ℓ / n)),
    D(θ, σ) = log|L|² + e^ℓ/σ² + n log 2πσ² = F_n + n log n − n − nℓ + e^ℓ/σ² + 2n log σ.

ℓ comes from F at two observation counts, an identity in θ: F_{2n} − F_n = n(1 + log 2π + ℓ − log 4n). So D, ∇D
and ∇²D follow from F's at n and 2n, which for one grouping factor are closed forms over per-group sums
(`fit.gaussian_derivatives`, the fit's own); batched over the two counts, the per-group work is done once.
A program built on these traces and compiles in a fraction of the time autodiff through the decomposition takes.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from ..fit import crossed_derivatives, crossed_objective, gaussian_derivatives, gaussian_objective
from ..likelihood.lmm import Stats

ML = 0.0


def _with_n(stats, n):
    """`stats` with n observations (the count enters the criterion only through n)."""
    if isinstance(stats, Stats):
        return dataclasses.replace(stats, n=n)
    return dataclasses.replace(stats, first=dataclasses.replace(stats.first, n=n))


def _count(stats):
    """n, the number of observations."""
    return stats.n if isinstance(stats, Stats) else stats.first.n


def _criterion(theta, stats):
    """F_n(θ), the profiled ML deviance."""
    if isinstance(stats, Stats):
        return gaussian_objective(theta, stats, jnp.asarray(ML))
    return crossed_objective(theta, stats, jnp.asarray(ML))


def _criterion_derivatives(theta, stats):
    """(F_n, ∇F_n, ∇²F_n) at θ: closed forms for one grouping factor, autodiff for several."""
    if isinstance(stats, Stats):
        return gaussian_derivatives(theta, stats, jnp.asarray(ML))
    return crossed_derivatives(theta, stats, jnp.asarray(ML))


def _at_two_counts(fun, theta, stats):
    """fun(θ, stats) at n and at 2n observations, stacked (only the parts that depend on n are batched)."""
    n = _count(stats)
    return jax.vmap(lambda m: fun(theta, _with_n(stats, m)))(jnp.stack([n, 2.0 * n]))


def _log_r2(F, n):
    """ℓ = log r² from F at n and 2n (see the module docstring)."""
    return (F[1] - F[0]) / n - 1.0 - jnp.log(2.0 * jnp.pi) + jnp.log(4.0 * n)


def deviance(varpar, stats):
    """The ML deviance at θ = varpar[:-1], σ = varpar[-1] (as `ddf.unprofiled_deviance` with reml = 0)."""
    theta, sigma = varpar[:-1], varpar[-1]
    F, n = _at_two_counts(_criterion, theta, stats), _count(stats)
    ell = _log_r2(F, n)
    return F[0] + n * jnp.log(n) - n - n * ell + jnp.exp(ell) / sigma ** 2 + 2.0 * n * jnp.log(sigma)


def deviance_derivatives(varpar, stats):
    """(D, ∇D, ∇²D) in varpar = (θ, σ), exact: with e = r²/σ²,
    ∇_θD = ∇F + (e − n)∇ℓ, ∇²_θθD = ∇²F + (e − n)∇²ℓ + e∇ℓ∇ℓᵀ, ∂_σD = 2(n − e)/σ, ∂²_σσD = (6e − 2n)/σ²,
    ∂²_θσD = −2e∇ℓ/σ."""
    theta, sigma = varpar[:-1], varpar[-1]
    (F, g, H), n = _at_two_counts(_criterion_derivatives, theta, stats), _count(stats)
    ell, g_ell, H_ell = _log_r2(F, n), (g[1] - g[0]) / n, (H[1] - H[0]) / n
    e = jnp.exp(ell) / sigma ** 2
    value = F[0] + n * jnp.log(n) - n - n * ell + e + 2.0 * n * jnp.log(sigma)
    grad = jnp.append(g[0] + (e - n) * g_ell, 2.0 * (n - e) / sigma)
    cross = -2.0 * e / sigma * g_ell
    hess = jnp.block([[H[0] + (e - n) * H_ell + e * jnp.outer(g_ell, g_ell), cross[:, None]],
                      [cross[None, :], ((6.0 * e - 2.0 * n) / sigma ** 2)[None, None]]])
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
