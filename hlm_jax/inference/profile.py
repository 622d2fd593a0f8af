"""Confidence intervals: profile likelihood (lme4's profile + confint) and Wald.

lme4 profiles the ML deviance (a REML fit is refitted by ML first, as lme4's devfun2
does), on the scale of its confint(oldNames = FALSE) rows: each random term's sds and
correlations, the residual sd `sigma`, then the fixed effects. For one parameter held at x,
the deviance is minimised over all the others and

    ζ(x) = sign(x − x̂) √(deviance(x) − deviance(x̂)),

and the interval is where ζ = ±z_{(1+level)/2}. lme4 steps along ζ and inverts an
interpolating spline; here the end points are roots of ζ found directly (Brent's method),
each ζ evaluation an exact-Hessian Newton minimisation warm-started from the last.

Holding one variance parameter, the others are free in x = (θ, log σ), θ unbounded (the
deviance depends on ΛΛᵀ only and is smooth in every entry of Λ, also where a variance is 0
or a correlation ±1, which is where lme4's sd/cor scale has its edges): an sd σ|λ_k| is held
by σ = value/|λ_k|, σ directly, a correlation cos∠(λ_k, λ_l) by rebuilding row k of Λ from
its part orthogonal to row l (`held_varpar`). Each ζ is the best of a few Newton runs, from
the last solution and from it with the diagonal of Λ moved off 0 (see `starts`). The fixed effects are
profiled exactly: holding β_j = b is the model of y − b·x_j on the other columns, whose statistics
(`unprofiled.held_column`, same shapes) go through the same program with (θ, log σ) free. One compiled
program serves every parameter; its deviance and derivatives come in closed form from the profiled
criterion's (`unprofiled`), one start a call.
Correlations are searched on their own scale, sds and σ on the log scale (from 0 upwards
for an sd estimated at 0).
"""
from __future__ import annotations

from statistics import NormalDist

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from ..compile_time import ONCE, Program
from ..design import NotYetSupportedError
from ..messages import warn
from ..optimize import minimize
from ..precision import float64
from ..progress import bar as progress_bar
from ..report import with_timing
from ..results import fit_design
from ._likelihood import model_stats
from .unprofiled import deviance, deviance_derivatives, held_column

BOUNDARY_COR = 1.0 - 1e-6  # a correlation searched no closer to ±1 (ζ is flat there anyway)
COR_STEP, LOG_SD_STEP = 0.1, 0.3  # first steps out from the estimate: a correlation, a log sd or log σ


def _z_quantile(level: float) -> float:
    if not 0 < level < 1:
        raise ValueError(f"level must be between 0 and 1, got {level}")
    return NormalDist().inv_cdf(0.5 + level / 2)  # the standard library's: no scipy.special to import


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


# ---- the variance parameters, held one at a time ------------------------------------------------

SD, COR, SIGMA, FIXED = 0, 1, 2, 3
RANDOM_STARTS = 8


def _lower_tri(q: int) -> list[tuple[int, int]]:
    """(i, j) of θ's entries within a q × q term: column by column, i ≥ j (lme4's order)."""
    return [(i, j) for j in range(q) for i in range(j, q)]


def _safe_norm(v: jax.Array) -> jax.Array:
    return jnp.sqrt(jnp.sum(v * v) + 1e-300)


def held_varpar(x: jax.Array, kind, value, E_k: jax.Array, E_l: jax.Array) -> tuple[jax.Array, jax.Array]:
    """varpar = (θ, σ) on the set where one sd, correlation or σ equals `value`, from free x = (θ, log σ),
    and a penalty that is 0 at every minimum and removes the directions the deviance ignores.

    E_k (K × q_max) picks row k of the term's Λ out of θ (v = E_kᵀθ), E_l row l. The sd of row k is
    σ|λ_k|: holding it, row k becomes (value/σ) v/|v| (penalty (|v|² − 1)² for the unused scale of v).
    The correlation of rows k > l is cos∠(λ_k, λ_l): row k becomes α û_l + w from the part w of v
    orthogonal to û_l, α = r|w|/√(1 − r²) (penalty (û_l·v)²). Holding σ leaves log σ unused (penalty
    (log σ)²). FIXED (a fixed effect held, through the statistics) holds nothing here: varpar = (θ, e^{log σ}).
    θ itself is unbounded here: the deviance depends on ΛΛᵀ only and is smooth in Λ.
    """
    theta, log_sigma = x[:-1], x[-1]
    is_sd, is_cor, is_sigma = kind == SD, kind == COR, kind == SIGMA
    # the inputs of norms and quotients are constants where unused, so every derivative stays finite
    v = jnp.where(is_sigma, 1.0, E_k.T @ theta)
    lam_l = jnp.where(is_cor, E_l.T @ theta, 1.0)
    r = jnp.where(is_cor, value, 0.0)
    sigma = jnp.where(is_sigma, value, jnp.exp(log_sigma))
    u = lam_l / _safe_norm(lam_l)
    along = jnp.dot(u, v)
    w = v - along * u
    row_cor = r * _safe_norm(w) / jnp.sqrt(1.0 - r * r) * u + w
    row_sd = jnp.where(is_sd, value, 1.0) / sigma * v / _safe_norm(v)
    new_row = jnp.where(is_cor, row_cor, jnp.where(is_sd, row_sd, v))
    theta = jnp.where(is_cor | is_sd, theta + E_k @ (new_row - v), theta)
    norm2 = jnp.sum(v * v)
    penalty = jnp.where(is_cor, along * along, jnp.where(is_sd, (norm2 - 1.0) ** 2,
                                                         jnp.where(is_sigma, log_sigma * log_sigma, 0.0)))
    return jnp.concatenate([theta, sigma[None]]), penalty


def _held_objective(x, kind, value, E_k, E_l, stats):
    """The ML deviance at x = (θ, log σ) mapped onto the held set, plus `held_varpar`'s penalty."""
    varpar, penalty = held_varpar(x, kind, value, E_k, E_l)
    return deviance(varpar, stats) + penalty


def _held_derivatives(fun, x, args):
    """(∇f, ∇²f) of `_held_objective` by the chain rule: D's closed-form derivatives in varpar (`deviance_derivatives`)
    and forward-mode first and second derivatives of the small map x → (varpar, penalty)."""
    kind, value, E_k, E_l, stats = args

    def held(z):
        varpar, penalty = held_varpar(z, kind, value, E_k, E_l)
        return jnp.append(varpar, penalty)

    def jacobian_twice(z):
        J = jax.jacfwd(held)(z)
        return J, J

    second, J = jax.jacfwd(jacobian_twice, has_aux=True)(x)   # (m, k, k), (m, k)
    _, g, H = deviance_derivatives(held(x)[:-1], stats)
    weights = jnp.append(g, 1.0)
    return J.T @ weights, J[:-1].T @ H @ J[:-1] + jnp.tensordot(weights, second, 1)


def _minimise_held_at(x0, lower, kind, value, E_k, E_l, column, delta, stats):
    """Minimise the ML deviance over x = (θ, log σ) ≥ lower with one variance parameter held (`held_varpar`)
    or, for kind FIXED, β_j held at β₀_j + delta (`column`: the one-hot of j)."""
    stats = held_column(stats, column, delta)
    state = minimize(_held_objective, x0, lower, (kind, value, E_k, E_l, stats), max_iter=100,
                     derivs=_held_derivatives)
    return state.x, state.f


# one program for every held parameter (variance parameters and fixed effects alike), one start a call
_minimise_held = Program(_minimise_held_at, "profile_held", compiler_options=ONCE)


# ---- profiles ------------------------------------------------------------------------------------

class _Profiler:
    """ζ functions of one ML fit, with warm starts carried between evaluations."""

    def __init__(self, ml):
        if any(s.kind != "us" and s.q > 1 for s in ml.layout.structures):
            raise NotYetSupportedError(f"profile intervals hold rows of an unstructured Λ; this model has "
                                       f"{ml.layout.kinds()} terms (use method='boot')")
        self.ml = ml
        self.stats, self.beta0 = model_stats(ml.design)
        self.base = ml.objective
        self.theta = np.asarray(ml.theta, float)
        self.sizes = [len(cols) for _, cols, _ in ml.term_covariances()]
        self.qmax = max(self.sizes)
        self.params = []  # (kind, term, row k, row l) per variance parameter, in lme4's order
        self.offsets = np.cumsum([0] + [q * (q + 1) // 2 for q in self.sizes])
        for t, q in enumerate(self.sizes):
            self.params += [(SD if i == j else COR, t, i, j) for i, j in _lower_tri(q)]
        self.params.append((SIGMA, -1, 0, 0))
        self.min_dev = self.base
        self.x_hat = np.append(self.theta, np.log(ml.sigma))
        self.lower_x = np.append(ml.layout.lower, -np.inf)  # diagonal of Λ ≥ 0, as in the fit

    def row_picker(self, term: int, row: int) -> np.ndarray:
        """E (K × q_max): λ_row of `term` = Eᵀθ."""
        E = np.zeros((len(self.theta), self.qmax))
        if term < 0:
            return E
        for e, (i, j) in enumerate(_lower_tri(self.sizes[term])):
            if i == row:
                E[self.offsets[term] + e, j] = 1.0
        return E

    def natural(self, k: int, varpar: np.ndarray) -> float:
        """The sd, correlation or σ of parameter k at varpar = (θ, σ)."""
        kind, term, i, j = self.params[k]
        sigma = varpar[-1]
        if kind == SIGMA:
            return float(sigma)
        lam_i = self.row_picker(term, i).T @ varpar[:-1]
        if kind == SD:
            return float(sigma * np.linalg.norm(lam_i))
        lam_j = self.row_picker(term, j).T @ varpar[:-1]
        denom = np.linalg.norm(lam_i) * np.linalg.norm(lam_j)
        return float(lam_i @ lam_j / denom) if denom > 0 else 0.0

    def _floor_diagonal(self, x: np.ndarray, fraction: float, minimum: float) -> np.ndarray:
        out = x.copy()
        for t, q in enumerate(self.sizes):
            block = out[self.offsets[t]:self.offsets[t + 1]]
            floor = max(fraction * np.max(np.abs(block)), minimum)
            for e, (i, j) in enumerate(_lower_tri(q)):
                if i == j:
                    block[e] = max(abs(block[e]), floor)
        return out

    def starts(self, warm: np.ndarray) -> np.ndarray:
        """Starting points for one ζ: the last solution; it with the diagonal of Λ off 0 (where a held
        correlation's row has no part orthogonal to the other row, or an sd sits at 0, Newton cannot
        leave); and the fit's optimum with every diagonal at least half the term's largest entry (with a
        term near-unidentifiable, the held problem can have several minima: these reach the usual ones)."""
        out = [warm, self._floor_diagonal(warm, 0.0, 0.05), self._floor_diagonal(self.x_hat, 0.0, 0.05),
               self._floor_diagonal(self.x_hat, 0.5, 0.05)]
        if max(self.sizes) >= 3:  # three or more correlated columns: also a few random starts (fixed seed)
            rng = np.random.default_rng(20240501)
            scale = np.concatenate([np.full(self.offsets[t + 1] - self.offsets[t], 0.3 * max(np.max(np.abs(
                self.theta[self.offsets[t]:self.offsets[t + 1]])), 0.1)) for t in range(len(self.sizes))] + [[0.0]])
            out += [self.x_hat + scale * rng.standard_normal(self.x_hat.size) for _ in range(RANDOM_STARTS)]
        return np.stack(out)

    def variance_zeta_fn(self, k: int):
        """ζ as a function of the natural value (sd, correlation or sigma) of variance parameter k."""
        kind, term, i, j = self.params[k]
        E_k, E_l = self.row_picker(term, i), self.row_picker(term, j)
        x_hat = self.natural(k, np.append(self.theta, self.ml.sigma))
        # the row whose direction held_varpar normalises keeps a positive diagonal (the direction of a
        # zero row is undefined); 1e-8 relative to σ is far below anything a deviance can resolve
        lower = self.lower_x.copy()
        if kind != SIGMA:
            row = j if kind == COR else i
            diagonal = self.offsets[term] + _lower_tri(self.sizes[term]).index((row, row))
            lower[diagonal] = 1e-8
        start = {"x": self.x_hat.copy()}

        def zeta(x, x_ref=x_hat):
            starts = self.starts(start["x"])
            if kind == SIGMA:
                starts[:, -1] = 0.0  # log σ is a dummy then (see held_varpar)
            # identical starts give identical runs: each distinct one once (the first of equal minima is kept)
            distinct = [s for k, s in enumerate(starts) if not any(np.array_equal(s, t) for t in starts[:k])]
            runs = [self.minimise(s, lower, kind, float(x), E_k, E_l) for s in distinct]  # dispatched, then read
            fs = np.array([float(f) for _, f in runs])
            fs = np.where(np.isfinite(fs), fs, np.inf)
            best = int(np.argmin(fs))
            if np.isfinite(fs[best]):
                start["x"] = np.asarray(runs[best][0])
            return self.zeta_of(x - x_ref, float(fs[best]))

        return zeta, x_hat

    def minimise(self, x0, lower, kind: int, value: float, E_k, E_l, j: int | None = None, delta: float = 0.0):
        """`_minimise_held` from x0 (arrays as JAX returns them, not yet read)."""
        column = np.zeros(len(self.beta0)) if j is None else np.eye(len(self.beta0))[j]
        return _minimise_held(x0, lower, np.asarray(kind), np.asarray(value), E_k, E_l, column, np.asarray(delta),
                              self.stats)

    def zeta_of(self, offset: float, f: float) -> float:
        """ζ from the minimised deviance f at a held value `offset` from the estimate."""
        self.min_dev = min(self.min_dev, f)
        return np.sign(offset) * np.sqrt(max(f - self.base, 0.0))

    def fixed_zeta_fn(self, j: int):
        """ζ as a function of fixed effect j's value (σ and θ free, β_j held through the statistics)."""
        beta_hat = float(self.ml.fixef.iloc[j])
        start = {"x": self.x_hat.copy()}
        none = self.row_picker(-1, 0)

        def zeta(b, b_hat=beta_hat):
            x, f = self.minimise(start["x"], self.lower_x, FIXED, 0.0, none, none, j, b - self.beta0[j])
            x, f = np.asarray(x), float(f)
            if np.all(np.isfinite(x)):
                start["x"] = x
            return self.zeta_of(b - b_hat, f)

        return zeta


def brent_root(f, a: float, b: float, xtol: float, rtol: float, maxiter: int) -> float:
    """A root of f in [a, b] (f(a), f(b) of opposite signs) by Brent's method, step for step scipy's brentq
    (its C code, scipy/optimize/Zeros/brentq.c): here so that a first profile does not import scipy.optimize
    (0.3-0.4 s measured in a fresh process after a fit)."""
    x_pre, x_cur = a, b
    f_pre, f_cur = f(a), f(b)
    if f_pre == 0:
        return float(x_pre)
    if f_cur == 0:
        return float(x_cur)
    if np.signbit(f_pre) == np.signbit(f_cur):
        raise ValueError("f(a) and f(b) must have different signs")
    x_blk = f_blk = s_pre = s_cur = 0.0
    for _ in range(maxiter):
        if f_pre != 0 and f_cur != 0 and np.signbit(f_pre) != np.signbit(f_cur):
            x_blk, f_blk = x_pre, f_pre
            s_pre = s_cur = x_cur - x_pre
        if abs(f_blk) < abs(f_cur):  # keep the better end as x_cur
            x_pre, x_cur, x_blk = x_cur, x_blk, x_cur
            f_pre, f_cur, f_blk = f_cur, f_blk, f_cur
        delta = (xtol + rtol * abs(x_cur)) / 2
        s_bis = (x_blk - x_cur) / 2
        if f_cur == 0 or abs(s_bis) < delta:
            return float(x_cur)
        bisect = True
        if abs(s_pre) > delta and abs(f_cur) < abs(f_pre):
            if x_pre == x_blk:  # secant
                trial = -f_cur * (x_cur - x_pre) / (f_cur - f_pre)
            else:  # inverse quadratic
                d_pre = (f_pre - f_cur) / (x_pre - x_cur)
                d_blk = (f_blk - f_cur) / (x_blk - x_cur)
                trial = -f_cur * (f_blk * d_blk - f_pre * d_pre) / (d_blk * d_pre * (f_blk - f_pre))
            if 2 * abs(trial) < min(abs(s_pre), 3 * abs(s_bis) - delta):  # a good short step
                s_pre, s_cur, bisect = s_cur, trial, False
        if bisect:
            s_pre = s_cur = s_bis
        x_pre, f_pre = x_cur, f_cur
        x_cur += s_cur if abs(s_cur) > delta else (delta if s_bis > 0 else -delta)
        f_cur = f(x_cur)
    raise RuntimeError(f"Brent's method did not converge in {maxiter} iterations")


def end_point(zeta, to_natural, c_hat, step, target, sign, c_limit, x_hat, max_expand=40):
    """Natural value where |ζ| = target on side `sign`, searching in the coordinate c (root by Brent);
    None when ζ stays below target up to the boundary c_limit."""
    seen = {c_hat: -target}

    def g(c):  # remembered: the root finder must see the same values as the bracketing did
        if c not in seen:
            seen[c] = abs(zeta(to_natural(c), x_hat)) - target
        return seen[c]

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
            root = brent_root(g, lo, hi, xtol=1e-12 * max(1.0, abs(c)), rtol=1e-12, maxiter=100)
            return to_natural(root)
        if c_limit is not None and c == c_limit:
            return None
        inside = c
        # extrapolate ζ linearly in c (ζ is close to linear on these scales), with a margin
        distance = abs(c - c_hat) * min(max(1.3 * target / max(value + target, 1e-3), 1.3), 4.0)
    return None


@float64
def profile_intervals(model, level: float = 0.95, which: list[str] | None = None,
                      progress: bool | None = None) -> pd.DataFrame:
    """lme4's confint(m, method = "profile", oldNames = FALSE): rows sd_*/cor_* per random term (θ order),
    sigma, then the fixed effects; columns lower, upper. REML fits are profiled after an ML refit (lme4).
    `progress`: a bar over the parameters (None: shown once profiling has lasted 2 s; False: never)."""
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
    pbar = progress_bar(len(wanted), progress, "profile", unit="parameter")
    for k, name in enumerate(var_names):
        if name not in wanted:
            continue
        kind = prof.params[k][0]
        zeta, x_hat = prof.variance_zeta_fn(k)
        # first steps: ζ is close to linear on these scales and end_point extrapolates it from there
        if kind == COR:  # searched on the correlation itself, which may sit at ±1
            step, to_natural, c_hat, limits, bounds = COR_STEP, float, x_hat, (-BOUNDARY_COR, BOUNDARY_COR), (-1.0, 1.0)
        elif x_hat <= 1e-6 * ml.sigma:  # an sd estimated at 0: search upwards on the sd itself
            to_natural, c_hat, step, limits, bounds = float, 0.0, 0.25 * ml.sigma, (None, None), (0.0, np.inf)
        else:  # sds and sigma: on the log scale
            step = LOG_SD_STEP
            to_natural, c_hat, limits, bounds = (lambda c: float(np.exp(c))), float(np.log(x_hat)), \
                (np.log(x_hat) - 40.0, np.log(x_hat) + 40.0), (0.0, np.inf)
        at_lower = (kind == SD and x_hat <= 1e-6 * ml.sigma) or (kind == COR and x_hat <= -BOUNDARY_COR)
        at_upper = kind == COR and x_hat >= BOUNDARY_COR  # an estimate on the bound: that end is the bound
        lo = None if at_lower else end_point(zeta, to_natural, c_hat, step, target, -1, limits[0], x_hat)
        hi = None if at_upper else end_point(zeta, to_natural, c_hat, step, target, +1, limits[1], x_hat)
        rows[name] = (bounds[0] if lo is None else lo, bounds[1] if hi is None else hi)
        pbar.update(1)
    se = ml.std_errors.to_numpy()
    for j, name in enumerate(fixed_names):
        if name not in wanted:
            continue
        zeta = prof.fixed_zeta_fn(j)
        b_hat = float(ml.fixef.iloc[j])
        lo = end_point(zeta, float, b_hat, target * se[j], target, -1, None, b_hat)
        hi = end_point(zeta, float, b_hat, target * se[j], target, +1, None, b_hat)
        rows[name] = (-np.inf if lo is None else lo, np.inf if hi is None else hi)
        pbar.update(1)
    pbar.close()
    if prof.min_dev < prof.base - 1e-6 * max(1.0, abs(prof.base)):
        warn(f"profiling found a lower deviance ({prof.min_dev:.6f}) than the fit's "
             f"({prof.base:.6f}): the fit had not converged; refit and profile again", RuntimeWarning)
    order = [n for n in names if n in rows]
    return pd.DataFrame([rows[n] for n in order], index=order, columns=["lower", "upper"])


@with_timing
def confint(model, method: str = "profile", level: float = 0.95, **kw) -> pd.DataFrame:
    """Confidence intervals, rows named as lme4's confint(oldNames = FALSE), columns lower, upper.

    method "profile" (default, as lme4): profile likelihood for every parameter (a REML fit is refitted by
    ML first, as lme4); "wald": β̂ ± z·se for the fixed effects (NaN for variance parameters); "boot":
    parametric-bootstrap percentile intervals (keywords n=500, seed=0). `which=` picks profiled parameters.
    """
    key = str(method).lower()
    if key == "profile":
        model.require_plain("confint(method='profile')")
    if key == "wald":
        return wald_intervals(model, level)
    if key == "profile":
        return profile_intervals(model, level, **kw)
    if key in ("boot", "bootstrap"):
        from ..batch import bootstrap  # on first use: hlm_jax.batch costs a first profile 0.24 s (after a fit)

        n = kw.pop("n", kw.pop("nsim", 500))
        seed = kw.pop("seed", 0)
        intervals = bootstrap(model, n=n, seed=seed, **kw).confint(level)
        return intervals.reindex(model.varcorr_names() + ["sigma"] + list(model.fixef.index))  # lme4's row order
    raise ValueError(f"unknown confint method {method!r}; use 'wald', 'profile' or 'boot'")
