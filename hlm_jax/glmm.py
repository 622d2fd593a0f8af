"""Generalized linear mixed models: lme4's glmer response forms → padded tensors → the Laplace fit.

The response is a proportion y with prior weights w (binomial: the trials), from a 0/1 or logical
column, a proportion with `weights=`, or `cbind(successes, failures)`. Offsets come from `offset(...)`
terms and `offset=`. One grouping factor is fitted over the design's padded per-group tensors
(`laplace.GroupedModel`); several factors through the blocked joint system (`laplace.RowModel`).
The parameters are x = (θ, β[, log φ]) and the objective is −2 × the Laplace log-likelihood.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from .design import Design, DesignError, NotYetSupportedError, build_design
from .compile_time import ONCE, Program
from .fit import SINGLE_FIT_OPTIONS
from .formula import FormulaError, deparse
from .formula.parse import Call, Name
from .messages import warn
from .model import agq, laplace
from .model.family import Family, ResponseError, bad_rows
from .model.layout import theta_layout
from .optimize import forward_hessian, initial_state, minimize, newton_step, verified
from .prior import evaluate, split_offsets, unique_rows, weights_and_offset

RESPONSE = "glmer_response"
GTOL, MAX_STEP = 1e-10, 0.5     # the Newton iteration's tolerance and step cap (optimize.minimize's defaults)


class SeparationWarning(UserWarning):
    """Some fixed effects are not identified: a combination of them separates the 0s from the 1s."""


@dataclass
class GlmmData:
    """A GLMM's design (on a copy of the data whose response column is the proportion) and its rows'
    response y, prior weights w and offset, in the design's row order."""

    design: Design
    family: Family
    formula: str
    y: np.ndarray
    w: np.ndarray
    offset: np.ndarray
    n_trials_form: str = field(default="")


def build_glmm(formula: str, data: pd.DataFrame, family: Family, weights=None, offset=None) -> GlmmData:
    """Parse lme4's glmer formula (cbind, offset terms), check the response's support, build the design."""
    frame = unique_rows(data)
    plain, lhs, offsets = split_offsets(formula, RESPONSE)
    w, off = weights_and_offset(frame, weights, offset, offsets)
    if isinstance(lhs, Call) and lhs.func == "cbind":
        if len(lhs.args) != 2:
            raise FormulaError(f"{deparse(lhs)}: cbind() takes two arguments, cbind(successes, failures)")
        s, f = (evaluate(e, frame) for e in lhs.args)
        trials = s + f
        y = np.where(trials > 0, s / np.where(trials > 0, trials, 1.0), 0.0)
        _check_counts(s, f, frame.index)
        w = w * trials
    else:
        y = _binary_or_numeric(frame, lhs)
    ok = np.isfinite(y) & np.isfinite(w) & np.isfinite(off)
    family.check(y[ok], w[ok], frame.index[ok])
    copy = frame.assign(**{RESPONSE: np.where(ok, y, np.nan)})
    design = build_design(plain, copy)
    pos = copy.index.get_indexer(design.info.row_index)
    return GlmmData(design, family, formula, y[pos], w[pos], off[pos])


def _check_counts(s: np.ndarray, f: np.ndarray, rows) -> None:
    bad = (s < 0) | (f < 0)
    if bad.any():
        raise ResponseError(f"cbind(successes, failures) needs non-negative counts; rows {bad_rows(bad, rows)} "
                            "have a negative count (successes greater than trials?)")


def _binary_or_numeric(frame: pd.DataFrame, lhs) -> np.ndarray:
    """A logical, 0/1 or numeric response; a two-level factor counts its second level as success (R)."""
    name = lhs.name if isinstance(lhs, Name) else None
    if name in frame.columns and not pd.api.types.is_numeric_dtype(frame[name]) and frame[name].dtype != bool:
        col = frame[name]
        levels = list(col.cat.categories) if isinstance(col.dtype, pd.CategoricalDtype) else sorted(col.dropna().unique())
        if len(levels) != 2:
            raise DesignError(f"response {name!r} is not numeric and has {len(levels)} levels; a binomial "
                              "response needs two (the first is failure)")
        return np.where(col.isna(), np.nan, (col == levels[1]).to_numpy(float))
    return evaluate(lhs, frame)


# ---- the model as Laplace problems -----------------------------------------------------------

@jax.tree_util.register_dataclass
@dataclass(frozen=True)
class GlmBucket:
    """One bucket of groups padded to one length: X (G, n, p), Z (G, n, q), y, w, offset, mask (G, n)."""

    X: jax.Array
    Z: jax.Array
    y: jax.Array
    w: jax.Array
    offset: jax.Array
    mask: jax.Array


@jax.tree_util.register_dataclass
@dataclass(frozen=True)
class GlmRows:
    """Every row: X (n, p), y, w, offset (n,)."""

    X: jax.Array
    y: jax.Array
    w: jax.Array
    offset: jax.Array


@dataclass(frozen=True)
class GlmGroups(laplace.GroupedModel):
    """A GLM's rows given a group's random effects; params = (β, φ)."""

    family: Family

    def logdens(self, params, data, b):
        beta, phi = params
        eta = data.offset + data.X @ beta + data.Z @ b
        return jnp.sum(data.mask * self.family.kernel(data.y, eta, data.w, phi))

    def curvature(self, params, data, b):
        beta, phi = params
        eta = data.offset + data.X @ beta + data.Z @ b
        c = data.mask * self.family.fisher_weight(eta, data.w, phi)
        return (data.Z * c[:, None]).T @ data.Z


@dataclass(frozen=True)
class GlmRowModel(laplace.RowModel):
    """A GLM's rows given their random part z; params = (β, φ)."""

    family: Family

    def logdens_rows(self, params, rows, z):
        beta, phi = params
        return self.family.kernel(rows.y, rows.offset + rows.X @ beta + z, rows.w, phi)

    def curvature_rows(self, params, rows, z):
        beta, phi = params
        return self.family.fisher_weight(rows.offset + rows.X @ beta + z, rows.w, phi)

    @property
    def exact_curvature(self) -> bool:
        """The PIRLS weights are the exact curvature for a canonical link."""
        return self.family.link.name == self.family.canonical


@jax.tree_util.register_dataclass
@dataclass(frozen=True)
class Problem:
    """Everything the objective needs (a pytree): per-group buckets (one factor) or rows (several)."""

    buckets: tuple
    rows: GlmRows | None
    random: laplace.RandomRows | None
    family: Family = field(metadata=dict(static=True))
    n_theta: int = field(metadata=dict(static=True))
    structures: tuple = field(metadata=dict(static=True))
    q: tuple = field(metadata=dict(static=True))
    levels: tuple = field(metadata=dict(static=True))
    n_agq: int = field(default=1, metadata=dict(static=True))


def lambdas(theta, problem: Problem) -> tuple:
    """Λ_k of each factor at θ, as its covariance structure builds it."""
    return tuple(structure.lam(theta) for structure in problem.structures)


def split_params(x, problem: Problem):
    """x = (θ, β[, log φ]) → θ, (β, φ)."""
    theta = x[:problem.n_theta]
    if problem.family.has_dispersion:
        return theta, (x[problem.n_theta:-1], jnp.exp(x[-1]))
    return theta, (x[problem.n_theta:], jnp.ones((), x.dtype))


def laplace_deviance(x, problem: Problem, u0=None) -> jax.Array:
    """−2 × the Laplace log-likelihood at x = (θ, β[, log φ]): what the optimiser minimises. With several
    factors the inner iteration starts from u0 (the modes at a nearby x) when given."""
    return laplace_terms(x, problem, u0)[0]


def laplace_terms(x, problem: Problem, u0=None):
    """(−2 × the Laplace (or quadrature) log-likelihood at x, and with rows and the Laplace approximation the
    conditional modes u and the blocked H = I + ΛᵀZᵀCZΛ at them (for the modes' covariances), else None)."""
    theta, params = split_params(x, problem)
    lams = lambdas(theta, problem)
    if problem.rows is None:
        constant = sum(jnp.sum(b.mask * problem.family.log_normalizer(b.y, b.w)) for b in problem.buckets)
        return -2.0 * (laplace.grouped_loglik(GlmGroups(problem.family), params, lams[0], problem.buckets)
                       + constant), None
    constant = jnp.sum(problem.family.log_normalizer(problem.rows.y, problem.rows.w))
    if problem.n_agq > 1:
        return -2.0 * (agq.agq_loglik(GlmRowModel(problem.family), params, lams, problem.rows, problem.random,
                                      problem.n_agq) + constant), None
    ll, u, H = laplace.row_terms(GlmRowModel(problem.family), params, lams, problem.rows, problem.random, u0)
    return -2.0 * (ll + constant), (u, H)


def make_problem(gd: GlmmData, y: np.ndarray | None = None, grouped: bool = False, n_agq: int = 1) -> Problem:
    """The Laplace problem of a GLMM (optionally with another response y, e.g. a bootstrap draw); grouped=True
    evaluates a one-factor model over the padded per-group tensors, n_agq > 1 asks for quadrature. Row
    arrays stay numpy: the compiled fit takes them in one transfer."""
    if n_agq > 1 and (len(gd.design.info.factors) > 1 or gd.design.info.q > 1):
        raise NotYetSupportedError(f"nAGQ = {n_agq} needs a single scalar random effect (one term (1 | g)), "
                                   "as in lme4; use nAGQ = 1 (the Laplace approximation)")
    info = gd.design.info
    y = gd.y if y is None else y
    layout = theta_layout(info.terms)
    structures = tuple(layout.factor(k) for k in range(len(info.factors)))
    qs = tuple(f.q for f in info.factors)
    levels = tuple(f.n_levels for f in info.factors)
    if len(info.factors) == 1 and grouped:
        buckets = tuple(_bucket(b, y, gd.w, gd.offset) for b in gd.design.buckets)
        return Problem(buckets, None, None, gd.family, layout.size, structures, qs, levels)
    rows = GlmRows(np.asarray(info.X), np.asarray(y, float), np.asarray(gd.w, float), np.asarray(gd.offset, float))
    return Problem((), rows, random_rows(info), gd.family, layout.size, structures, qs, levels, n_agq)


def _bucket(b, y, w, off) -> GlmBucket:
    rows, mask = np.asarray(b.rows), np.asarray(b.mask)
    return GlmBucket(b.X, b.Z, jnp.asarray(y[rows] * mask), jnp.asarray(np.where(mask > 0, w[rows], 1.0)),
                     jnp.asarray(off[rows] * mask), b.mask)


def random_rows(info) -> laplace.RandomRows:
    """Each row's place in the joint random-effects vector (first factor block diagonal, the others dense)."""
    first, others = info.factors[0], info.factors[1:]
    offsets = np.cumsum([0] + [f.n_levels * f.q for f in others])
    idx2 = np.concatenate([np.zeros((info.nobs, 0), np.int64)] + [offsets[k] + f.codes[:, None] * f.q + np.arange(f.q)
                                                                 for k, f in enumerate(others)], axis=1)
    starts = np.cumsum([0] + [f.q for f in others])
    return laplace.RandomRows(np.asarray(first.codes), np.asarray(first.Z), idx2,
                              np.concatenate([np.zeros((info.nobs, 0))] + [f.Z for f in others], axis=1), first.n_levels,
                              int(offsets[-1]), tuple((int(starts[k]), f.q) for k, f in enumerate(others)))


# ---- starting values and the fit -------------------------------------------------------------

def _glm_start(X, y, w, off, family: Family, n_iter: int = 50) -> tuple[jax.Array, jax.Array]:
    """β of the GLM without random effects by IRLS (lme4 also starts there), and whether IRLS converged
    to finite, moderate linear predictors (when not, the data may be separated). One small compiled
    program (compiled quickly and kept on disk: it runs once per fit), where eager steps cost a millisecond of
    dispatch."""
    binomial = family.name == "binomial"
    mu = jnp.clip((w * y + 0.5) / (w + 1.0), 1e-4, 1 - 1e-4) if binomial else jnp.maximum(y, 0.1) \
        if family.name == "poisson" else y
    link = family.link

    def step(c):
        beta, eta, it, _ = c
        d = link.mu_eta(eta)
        W = w * d * d / jnp.maximum(family.variance(link.linkinv(eta)), 1e-300)
        zwork = eta - off + (y - link.linkinv(eta)) / jnp.where(d == 0, 1e-300, d)
        sw = jnp.sqrt(W)
        new = jnp.linalg.lstsq(X * sw[:, None], zwork * sw)[0]
        done = jnp.max(jnp.abs(new - beta)) < 1e-8 * (1 + jnp.max(jnp.abs(new)))
        eta = off + X @ new
        return new, jnp.clip(eta, -30, 30) if binomial else eta, it + 1, done

    start = (jnp.zeros(X.shape[1], X.dtype), link.linkfun(mu), 0, jnp.zeros((), bool))
    beta, _, _, done = jax.lax.while_loop(lambda c: (c[2] < n_iter) & ~c[3], step, start)
    return beta, done & (jnp.max(jnp.abs(X @ beta), initial=0.0) < 15)


glm_start = Program(_glm_start, "glm_start", static_argnames=("family", "n_iter"), compiler_options=ONCE)


def start_values(gd: GlmmData) -> tuple[np.ndarray, bool]:
    """x₀ = (θ₀, β of the GLM[, log σ]) and whether that GLM fit converged (see `glm_start`)."""
    info = gd.design.info
    beta, converged = glm_start(info.X, gd.y, gd.w, gd.offset, family=gd.family) if info.p else (np.zeros(0), True)
    beta, converged = np.asarray(beta), bool(converged)
    x = [theta_layout(info.terms).start(), beta]
    if gd.family.has_dispersion:
        resid = gd.y - (gd.offset + info.X @ beta)
        x.append([np.log(np.sqrt(np.sum(gd.w * resid ** 2) / len(resid)))])
    return np.concatenate(x), converged


def lower_bounds(gd: GlmmData) -> np.ndarray:
    n_rest = gd.design.info.p + gd.family.has_dispersion
    return np.concatenate([theta_layout(gd.design.info.terms).lower, np.full(n_rest, -np.inf)])


def derivatives(x, problem: Problem, u0=None):
    """(f, ∇f, ∇²f, (modes, H) or None) at x: forward-mode derivatives of the reverse-mode gradient (several
    times faster than linearising the gradient through the implicitly differentiated mode), f, the modes and
    the Laplace H from the same pass (`laplace_terms`); the inner iteration starts from u0."""
    def gradient(z):
        (f, aux), g = jax.value_and_grad(laplace_terms, has_aux=True)(z, problem, u0)
        return g, (f, g, aux)

    H, (f, g, aux) = jax.jacfwd(gradient, has_aux=True)(x)
    return f, g, H, aux


def _modes_of(aux):
    """The conditional modes in `derivatives`' last output (where the next inner iteration starts), or None."""
    return None if aux is None else aux[0]


def _fit_problem(problem: Problem, x0, lower, max_iter: int = 200):
    """Minimise the Laplace deviance over x = (θ, β[, log φ]) by `optimize.newton_step` with exact
    derivatives; return the optimiser's state, the deviance's Hessian there (for vcov) and the conditional
    modes. The derivatives are taken at the top of each pass of the one loop, only where x moved, so the
    program holds a single copy of them (their trace is most of its compile time) and the last are those at
    x̂; the inner iteration at a point starts from the last point's modes."""
    x0 = jnp.maximum(x0, lower)
    state = initial_state(lambda *_: jnp.asarray(jnp.nan, x0.dtype), x0, lower, ())
    aux = jax.tree_util.tree_map(lambda a: jnp.zeros(a.shape, a.dtype),   # placeholders (no derivatives traced)
                                 jax.eval_shape(lambda x: laplace_terms(x, problem)[1], x0))
    g, H = jnp.zeros_like(x0), jnp.zeros((x0.size, x0.size), x0.dtype)

    def going(s):
        return (s.iterations < max_iter) & ~s.converged & ~s.stalled

    def step(c):
        s, at, g, H, aux, _ = c
        f, g, H, aux = jax.lax.cond(jnp.any(s.x != at), lambda: derivatives(s.x, problem, _modes_of(aux)),
                                    lambda: (s.f, g, H, aux))
        s = s._replace(f=jnp.where(s.iterations == 0, f, s.f))   # f at x0 comes with its derivatives
        args = (problem, _modes_of(aux))
        new = jax.lax.cond(going(s), lambda: newton_step(laplace_deviance, lambda *_: (s.f, g, H), s, lower, args,
                                                         GTOL, MAX_STEP), lambda: s)
        return new, s.x, g, H, aux, ~going(s)

    start = (state, jnp.full_like(x0, jnp.nan), g, H, aux, jnp.zeros((), bool))
    state, _, _, H, aux, _ = jax.lax.while_loop(lambda c: ~c[-1], step, start)
    return state._replace(converged=verified(state)), H, modes_at(state.x, problem, aux)


# A model's first fit waits for the compiler, so it runs XLA's quick program (compile_time.ONCE: cbpp 4.0 → 1.7 s,
# VerbAgg 10.9 → 3.3 s). Its code is slower (VerbAgg's fit 1.0 s instead of 0.45 s), so above QUICK_ROWS rows the
# optimised program replaces it after compile_time.UPGRADE_CALLS fits of one shape in a process; on small data the
# fit takes milliseconds either way and stays quick. Both kept on disk: a fresh process with a filled cache loads
# them instead of tracing, lowering and compiling.
QUICK_ROWS = 500
FIT_PROGRAMS = {True: Program(_fit_problem, "glmer_fit_quick", static_argnames=("max_iter",), compiler_options=ONCE),
                False: Program(_fit_problem, "glmer_fit", static_argnames=("max_iter",),
                               compiler_options=SINGLE_FIT_OPTIONS, quick_options=ONCE)}


def n_rows(problem: Problem) -> int:
    """The rows of the data a problem holds (padding included), which sets what its compiled code costs."""
    return len(problem.rows.y) if problem.rows is not None else sum(b.mask.size for b in problem.buckets)


def fit_problem(problem: Problem, x0, lower, max_iter: int = 200):
    """`_fit_problem` by the program that suits the data's size (see FIT_PROGRAMS)."""
    return FIT_PROGRAMS[n_rows(problem) <= QUICK_ROWS](problem, x0, lower, max_iter=max_iter)


def held_deviance(x, problem: Problem, onehot, value) -> jax.Array:
    """The Laplace deviance with the coordinate marked by `onehot` held at `value` (a profile point)."""
    return laplace_deviance(jnp.where(onehot, value, x), problem)


def _fit_held(problem: Problem, x0, lower, onehot, value, max_iter: int = 200):
    """The deviance minimised over x with one coordinate held (the held one has no gradient or curvature, so
    Newton leaves it): the optimiser's final state, `converged` verified."""
    return minimize(held_deviance, x0, lower, (problem, onehot, value), max_iter=max_iter, derivs=forward_hessian)


# A profile runs it a few hundred times, so the quick program (compile_time.ONCE) pays only on small data:
# cbpp's first profile confint 6.9 → 4.3 s (56 rows, each fit a few ms either way), while on VerbAgg (7,584 rows)
# ONCE compiles in 5.7 s instead of 11.1 but each fit takes 0.65 s instead of 0.22 s. Both kept on disk.
HELD_PROGRAMS = {quick: Program(_fit_held, "glmer_fit_held" + ("_quick" if quick else ""),
                                static_argnames=("max_iter",), compiler_options=ONCE if quick else SINGLE_FIT_OPTIONS)
                 for quick in (True, False)}


def fit_held(problem: Problem, x0, lower, onehot, value, max_iter: int = 200):
    """`_fit_held` by the program that suits the data's size (quickly compiled up to QUICK_ROWS rows)."""
    return HELD_PROGRAMS[n_rows(problem) <= QUICK_ROWS](problem, x0, lower, onehot, value, max_iter=max_iter)


class ModeInfo(NamedTuple):
    """At x̂: per factor, the conditional modes b (levels, q) and cov(b | y) (levels, q, q)."""

    modes: tuple
    covs: tuple


def modes_at(x, problem: Problem, aux=None) -> ModeInfo:
    """Conditional modes b = Λû and their covariances ΛH⁻¹Λᵀ (the Laplace approximation's), from the modes and
    blocked H that `laplace_terms` gave at x (`aux`) or, without them, computed here."""
    theta, params = split_params(x, problem)
    lams = lambdas(theta, problem)
    if problem.rows is None:
        modes, covs = [], []
        for data in problem.buckets:
            _, u, H = laplace.group_terms(GlmGroups(problem.family), params, lams[0], data)
            modes.append(u @ lams[0].T)
            covs.append(lams[0] @ jnp.linalg.inv(H) @ lams[0].T)
        return ModeInfo((jnp.concatenate(modes),), (jnp.concatenate(covs),))
    if aux is None:
        _, u, H = laplace.row_terms(GlmRowModel(problem.family), params, lams, problem.rows, problem.random)
    else:
        u, H = aux
    (u1, u2), (cov1, cov2) = u, laplace.conditional_covariances(H)
    modes, covs, start = [u1 @ lams[0].T], [lams[0] @ cov1 @ lams[0].T], 0
    for lam in lams[1:]:
        q = lam.shape[0]
        n = problem.levels[len(modes)]
        modes.append(u2[start:start + n * q].reshape(n, q) @ lam.T)
        block = cov2[start:start + n * q, start:start + n * q].reshape(n, q, n, q)
        covs.append(lam @ jnp.einsum("aibj->abij", block)[jnp.arange(n), jnp.arange(n)] @ lam.T)
        start += n * q
    return ModeInfo(tuple(modes), tuple(covs))


def separation_check(X: np.ndarray, y: np.ndarray, w: np.ndarray, names, family: Family) -> None:
    """Warn when a direction of the fixed effects separates the binomial 0s from the 1s (complete or
    quasi-complete separation: the ML estimate is infinite); found by a linear program (Konis 2007)."""
    if family.name != "binomial" or X.shape[1] == 0:
        return
    from scipy.optimize import linprog  # here, where separation is suspected: 0.16 s of every first glmer else
    k = y * w
    upper = k > 0      # rows with successes need x'd ≥ 0
    lower = k < w      # rows with failures need x'd ≤ 0
    A = np.concatenate([-X[upper & ~lower], X[lower & ~upper]])
    both = X[upper & lower]
    A_eq = both if len(both) else None
    c = -(X[upper & ~lower].sum(axis=0) - X[lower & ~upper].sum(axis=0))
    res = linprog(c, A_ub=A if len(A) else None, b_ub=np.zeros(len(A)) if len(A) else None, A_eq=A_eq,
                  b_eq=np.zeros(len(both)) if len(both) else None, bounds=[(-1, 1)] * X.shape[1], method="highs")
    if res.status == 0 and -res.fun > 1e-7 * max(1.0, np.abs(X).max()):
        d = res.x
        involved = [n for n, v in zip(names, d) if abs(v) > 1e-7]
        warn(f"complete or quasi-complete separation: the fixed effects {', '.join(involved)} separate "
             "the outcomes, so their estimates are not finite (large estimates and standard errors "
             "below are meaningless); consider removing or merging those terms", SeparationWarning)
