"""Confidence intervals: profile likelihood (lme4's profile + confint) and Wald.

lme4 profiles the ML deviance (a REML fit is refitted by ML first, as lme4's devfun2
does), on the scale of its confint(oldNames = FALSE) rows: each random term's sds and
correlations, the residual sd `sigma`, then the fixed effects. For one parameter held at x,
the deviance is minimised over all the others and

    ζ(x) = sign(x − x̂) √(deviance(x) − deviance(x̂)),

and the interval is where ζ = ±z_{(1+level)/2}. lme4 steps along ζ and inverts an
interpolating spline; here the end points are roots of ζ found directly (Brent's method),
each ζ evaluation an exact-Hessian Newton minimisation warm-started from the last.

Nuisance parameters are unconstrained: each term's covariance is diag(s) R diag(s) with
log s free and R = CCᵀ, C lower triangular with rows w_i/|w_i|, w_i = (z_i1, …, z_i,i−1, 1);
a correlation being profiled is moved to the (2, 1) place of C by permuting the term's
columns, where it is the single coordinate z/√(1 + z²). The fixed effects are profiled
exactly over β: holding β_j = b adds (b − β̂_j(θ))² / [(R_X R_Xᵀ)⁻¹]_jj to the penalised
residual sum of squares at θ, which is then minimised over θ.
"""
from __future__ import annotations

import warnings
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
from scipy import optimize as spo
from scipy import stats as sps

from ..likelihood import linalg
from ..optimize import minimize
from ..precision import float64
from ..results import fit_design
from ._likelihood import estimates_at, model_stats, n_and_p
from .ddf import ONCE, unprofiled_deviance

BOUNDARY_COR = 1.0 - 1e-9


def _z_quantile(level: float) -> float:
    if not 0 < level < 1:
        raise ValueError(f"level must be between 0 and 1, got {level}")
    return float(sps.norm.ppf(0.5 + level / 2))


# ---- Wald ----------------------------------------------------------------------------------------

def wald_intervals(model, level: float = 0.95) -> pd.DataFrame:
    """lme4's confint(method = "Wald"): β̂ ± z·se for fixed effects; NaN for the variance parameters."""
    z = _z_quantile(level)
    names = model.varcorr_names() + ["sigma"]
    beta = model.fixef.to_numpy()
    se = model.std_errors.to_numpy()
    lower = np.concatenate([np.full(len(names), np.nan), beta - z * se])
    upper = np.concatenate([np.full(len(names), np.nan), beta + z * se])
    return pd.DataFrame({"lower": lower, "upper": upper}, index=names + list(model.fixef.index))


# ---- the parametrisation profiled over -----------------------------------------------------------

def _term_sizes(model) -> list[int]:
    return [len(cols) for _, cols, _ in model.term_covariances()]


def _lower_tri(q: int) -> list[tuple[int, int]]:
    """(i, j) of θ's entries within a q × q term: column by column, i ≥ j (lme4's order)."""
    return [(i, j) for j in range(q) for i in range(j, q)]


def _correlation_factor(z_vals: jax.Array, q: int) -> jax.Array:
    """C lower triangular with unit rows: row i is (z_i1, …, z_i,i−1, 1) normalised."""
    C = jnp.eye(q, dtype=z_vals.dtype)
    pos = 0
    rows = [C[0]]
    for i in range(1, q):
        w = jnp.concatenate([z_vals[pos:pos + i], jnp.ones(1, z_vals.dtype), jnp.zeros(q - i - 1, z_vals.dtype)])
        pos += i
        rows.append(w / jnp.sqrt(jnp.sum(w * w)))
    return jnp.stack(rows)


def psi_to_varpar(psi: jax.Array, sizes: tuple[int, ...], perms: jax.Array) -> jax.Array:
    """ψ (per term: log sds, then the correlation coordinates; last: log σ) → varpar = (θ, σ).

    `perms` (one row per term, padded) orders each term's columns for its correlation factor."""
    sigma = jnp.exp(psi[-1])
    thetas = []
    pos = 0
    for t, q in enumerate(sizes):
        logs = psi[pos:pos + q]
        z = psi[pos + q:pos + q * (q + 1) // 2]
        pos += q * (q + 1) // 2
        if q == 1:
            thetas.append(jnp.exp(logs) / sigma)
            continue
        perm = perms[t, :q]
        inv = jnp.argsort(perm)
        C = _correlation_factor(z, q)
        R = (C @ C.T)[inv][:, inv]
        s = jnp.exp(logs)
        lam = linalg.cholesky(R * s[:, None] * s[None, :]) / sigma
        thetas.append(jnp.stack([lam[i, j] for i, j in _lower_tri(q)]))
    return jnp.concatenate(thetas + [sigma[None]])


def _psi_index(sizes) -> list[tuple[str, int, int, int]]:
    """For each profiled variance parameter (θ order, then sigma): (kind, term, i, j) and its ψ slot."""
    out = []
    pos = 0
    for t, q in enumerate(sizes):
        k_cor = 0
        for i, j in _lower_tri(q):
            if i == j:
                out.append(("sd", t, i, j, pos + i))
            else:
                out.append(("cor", t, i, j, None))
            k_cor += i != j
        pos += q * (q + 1) // 2
    out.append(("sigma", -1, 0, 0, pos))
    return out


def varpar_to_psi(covs: list[np.ndarray], sigma: float, perms: np.ndarray) -> np.ndarray:
    """Inverse of psi_to_varpar from each term's covariance matrix (in the original column order)."""
    psi = []
    for t, cov in enumerate(covs):
        q = cov.shape[0]
        s = np.sqrt(np.maximum(np.diag(cov), 0.0))
        s_safe = np.maximum(s, 1e-8 * max(sigma, 1e-300))
        psi += list(np.log(s_safe))
        if q == 1:
            continue
        R = cov / np.outer(s_safe, s_safe)
        np.fill_diagonal(R, 1.0)
        R = BOUNDARY_COR * R + (1 - BOUNDARY_COR) * np.eye(q)  # keep it positive definite
        perm = perms[t, :q]
        C = np.linalg.cholesky(R[np.ix_(perm, perm)])
        for i in range(1, q):
            psi += list(C[i, :i] / C[i, i])
    psi.append(np.log(sigma))
    return np.asarray(psi, float)


# ---- jit-compiled inner minimisations ------------------------------------------------------------

def _variance_objective(free, mask, value, sizes, perms, stats):
    psi = jnp.where(mask, value, free)
    return unprofiled_deviance(psi_to_varpar(psi, sizes, perms), stats, jnp.zeros(()))


@partial(jax.jit, static_argnames=("sizes",))
def _minimise_variance(psi0, mask, value, sizes, perms, stats):
    lower = jnp.full_like(psi0, -jnp.inf)
    state = minimize(_variance_objective, psi0, lower, (mask, value, sizes, perms, stats), max_iter=100)
    return state.x, state.f


@partial(jax.jit, static_argnames=("sizes",), compiler_options=ONCE)
def _variance_hessian(psi, sizes, perms, stats):
    f = lambda x: unprofiled_deviance(psi_to_varpar(x, sizes, perms), stats, jnp.zeros(()))
    return jax.hessian(f)(psi)


def fixed_profile_objective(theta, j, delta, stats):
    """ML deviance at θ with β_j held at β₀_j + delta (the other β and σ profiled out)."""
    est = estimates_at(theta, stats, jnp.zeros(()))
    n = n_and_p(stats)[0]
    s2 = est.sigma ** 2
    logdet = est.objective - n * (1.0 + jnp.log(2.0 * jnp.pi * s2))
    c_jj = est.vcov_beta[j, j] / s2
    r2 = n * s2 + (delta - est.beta[j]) ** 2 / c_jj
    return logdet + n * (1.0 + jnp.log(2.0 * jnp.pi * r2 / n))


@jax.jit
def _minimise_fixed(theta0, lower, j, delta, stats):
    state = minimize(fixed_profile_objective, theta0, lower, (j, delta, stats), max_iter=100)
    return state.x, state.f


# ---- profiles ------------------------------------------------------------------------------------

class _Profiler:
    """ζ functions of one ML fit, with warm starts carried between evaluations."""

    def __init__(self, ml):
        self.ml = ml
        self.stats, self.beta0 = model_stats(ml.design)
        self.base = ml.objective
        self.covs = [cov for _, _, cov in ml.term_covariances()]
        self.sizes = tuple(cov.shape[0] for cov in self.covs)
        self.qmax = max(self.sizes)
        self.index = _psi_index(self.sizes)
        self.lower_theta = jnp.asarray(ml.info.theta.lower)
        self.min_dev = self.base

    def _perms(self, term=None, i=None, j=None) -> np.ndarray:
        perms = np.tile(np.arange(self.qmax), (len(self.sizes), 1))
        if term is not None:
            q = self.sizes[term]
            rest = [c for c in range(q) if c not in (i, j)]
            perms[term, :q] = [j, i] + rest
        return perms

    def variance_zeta_fn(self, k: int):
        """ζ as a function of the natural value (sd, correlation or sigma) of variance parameter k."""
        kind, term, i, j, slot = self.index[k]
        perms = self._perms(term, i, j) if kind == "cor" else self._perms()
        psi_hat = varpar_to_psi(self.covs, self.ml.sigma, perms)
        if kind == "cor":
            slot = sum(q * (q + 1) // 2 for q in self.sizes[:term]) + self.sizes[term]  # z of C[1, 0]
        mask = np.zeros(psi_hat.size, bool)
        mask[slot] = True
        start = {"psi": psi_hat}
        perms_j = jnp.asarray(perms)

        def coordinate(x):
            if kind == "cor":
                r = np.clip(x, -BOUNDARY_COR, BOUNDARY_COR)
                return r / np.sqrt(1 - r * r)
            return np.log(max(x, 1e-300))

        def zeta(x, x_hat):
            c = coordinate(x)
            psi0 = start["psi"].copy()
            psi0[slot] = c
            psi, f = _minimise_variance(jnp.asarray(psi0), jnp.asarray(mask), jnp.asarray(c), self.sizes, perms_j,
                                        self.stats)
            psi, f = np.asarray(psi), float(f)
            if np.all(np.isfinite(psi)):
                start["psi"] = psi
            self.min_dev = min(self.min_dev, f)
            return np.sign(x - x_hat) * np.sqrt(max(f - self.base, 0.0))

        return zeta, psi_hat, slot, perms

    def variance_scale(self, psi_hat, slot, perms) -> float:
        """Approximate se of ψ_slot at the optimum (for the first bracketing step)."""
        H = np.asarray(_variance_hessian(jnp.asarray(psi_hat), self.sizes, jnp.asarray(perms), self.stats))
        try:
            cov = 2.0 * np.linalg.inv(H)
            se = float(np.sqrt(cov[slot, slot]))
        except np.linalg.LinAlgError:
            se = np.nan
        return se if np.isfinite(se) and se > 0 else 0.1

    def fixed_zeta_fn(self, j: int):
        beta_hat = float(self.ml.fixef.iloc[j])
        start = {"theta": np.asarray(self.ml.theta, float)}

        def zeta(b, b_hat=beta_hat):
            delta = b - self.beta0[j]
            theta, f = _minimise_fixed(jnp.asarray(start["theta"]), self.lower_theta, j, jnp.asarray(delta),
                                       self.stats)
            theta, f = np.asarray(theta), float(f)
            if np.all(np.isfinite(theta)):
                start["theta"] = theta
            self.min_dev = min(self.min_dev, f)
            return np.sign(b - b_hat) * np.sqrt(max(f - self.base, 0.0))

        return zeta


def _end_point(zeta, to_natural, c_hat, step, target, sign, c_limit, x_hat, max_expand=40):
    """Natural value where |ζ| = target on side `sign`, searching in the coordinate c (root by Brent);
    None when ζ stays below target up to the boundary c_limit."""
    def g(c):
        return abs(zeta(to_natural(c), x_hat)) - target

    inside, distance = c_hat, step
    for _ in range(max_expand):
        c = c_hat + sign * distance
        if c_limit is not None and sign * (c - c_limit) >= 0:
            c = c_limit
        value = g(c)
        if not np.isfinite(value):  # the inner minimisation failed out there: search closer in
            c_limit = c
            distance = (abs(inside - c_hat) + abs(c - c_hat)) / 2
            continue
        if value >= 0:
            lo, hi = sorted((inside, c))
            root = spo.brentq(g, lo, hi, xtol=1e-12 * max(1.0, abs(c)), rtol=1e-12, maxiter=100)
            return to_natural(root)
        if c_limit is not None and c == c_limit:
            return None
        inside = c
        # extrapolate ζ linearly in c (ζ is close to linear on these scales), with a margin
        distance = abs(c - c_hat) * min(max(1.3 * target / max(value + target, 1e-3), 1.3), 4.0)
    return None


@float64
def profile_intervals(model, level: float = 0.95, which: list[str] | None = None) -> pd.DataFrame:
    """lme4's confint(m, method = "profile", oldNames = FALSE): rows sd_*/cor_* per random term (θ order),
    sigma, then the fixed effects; columns lower, upper. REML fits are profiled after an ML refit (lme4)."""
    target = _z_quantile(level)
    ml = fit_design(model.design, REML=False) if model.reml else model
    prof = _Profiler(ml)
    var_names = ml.varcorr_names() + ["sigma"]
    fixed_names = list(ml.fixef.index)
    names = var_names + fixed_names
    wanted = names if which is None else list(which)
    unknown = [w for w in wanted if w not in names]
    if unknown:
        raise KeyError(f"{unknown[0]!r} is not a parameter of the model; parameters are: {', '.join(names)}")
    rows = {}
    for k, name in enumerate(var_names):
        if name not in wanted:
            continue
        kind = prof.index[k][0]
        zeta, psi_hat, slot, perms = prof.variance_zeta_fn(k)
        c_hat = float(psi_hat[slot])
        step = target * prof.variance_scale(psi_hat, slot, perms)
        if kind == "cor":  # searched on the correlation itself, which may sit at ±1
            x_hat = float(c_hat / np.sqrt(1 + c_hat * c_hat))
            step = step * (1 + c_hat * c_hat) ** -1.5  # dr/dz
            step = float(np.clip(step, 1e-3, 0.5)) if np.isfinite(step) else 0.1
            to_natural, c_hat = float, x_hat
            limits = (-BOUNDARY_COR, BOUNDARY_COR)
            bounds = (-1.0, 1.0)
        else:
            to_natural = lambda c: float(np.exp(c))
            x_hat = to_natural(c_hat)
            limits = (c_hat - 40.0, c_hat + 40.0)
            bounds = (0.0, np.inf)
            step = min(step, 1.0)  # at most a factor e in the sd for the first step
        term, i = prof.index[k][1], prof.index[k][2]
        at_boundary = kind == "sd" and prof.covs[term][i, i] <= (1e-6 * ml.sigma) ** 2
        if at_boundary:  # the estimate is 0: search upwards on the sd itself
            to_natural, c_hat, x_hat, step, limits = float, 0.0, 0.0, 0.25 * ml.sigma, (None, None)
        lo = None if at_boundary else _end_point(zeta, to_natural, c_hat, step, target, -1, limits[0], x_hat)
        hi = _end_point(zeta, to_natural, c_hat, step, target, +1, limits[1], x_hat)
        rows[name] = (bounds[0] if lo is None else lo, bounds[1] if hi is None else hi)
    se = ml.std_errors.to_numpy()
    for j, name in enumerate(fixed_names):
        if name not in wanted:
            continue
        zeta = prof.fixed_zeta_fn(j)
        b_hat = float(ml.fixef.iloc[j])
        lo = _end_point(zeta, float, b_hat, target * se[j], target, -1, None, b_hat)
        hi = _end_point(zeta, float, b_hat, target * se[j], target, +1, None, b_hat)
        rows[name] = (-np.inf if lo is None else lo, np.inf if hi is None else hi)
    if prof.min_dev < prof.base - 1e-6 * max(1.0, abs(prof.base)):
        warnings.warn(f"profiling found a lower deviance ({prof.min_dev:.6f}) than the fit's "
                      f"({prof.base:.6f}): the fit had not converged; refit and profile again", RuntimeWarning,
                      stacklevel=2)
    order = [n for n in names if n in rows]
    return pd.DataFrame([rows[n] for n in order], index=order, columns=["lower", "upper"])


def confint(model, method: str = "wald", level: float = 0.95, **kw) -> pd.DataFrame:
    """Confidence intervals by `method`: "wald", "profile" or "boot" (parametric bootstrap)."""
    key = str(method).lower()
    if key == "wald":
        return wald_intervals(model, level)
    if key == "profile":
        return profile_intervals(model, level, **kw)
    if key in ("boot", "bootstrap"):
        try:
            from ..batch import bootstrap
        except ImportError as exc:  # pragma: no cover - batch.py is another module of the package
            raise NotImplementedError("confint(method='boot') needs hlm_jax.batch.bootstrap") from exc
        n = kw.pop("n", kw.pop("nsim", 500))
        seed = kw.pop("seed", 0)
        intervals = bootstrap(model, n=n, seed=seed, **kw).confint(level)
        return intervals.reindex(model.varcorr_names() + ["sigma"] + list(model.fixef.index))  # lme4's row order
    raise ValueError(f"unknown confint method {method!r}; use 'wald', 'profile' or 'boot'")
