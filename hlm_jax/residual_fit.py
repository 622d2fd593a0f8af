"""Linear mixed models with a residual structure (nlme's correlation= and weights=): fit, SEs, batches.

Group g's marginal covariance is σ²(Z_gΛΛᵀZ_gᵀ + R_g). Whitening the rows of X, Z and y by
K_g (K_gᵀK_g = R_g⁻¹, from `model.residual`) leaves an LMM with iid errors, so the profiled
criterion (REML or ML, β and σ profiled out as nlme does) is lme4's on the whitened statistics
plus Σ_g log|R_g|; the optimiser sees one vector x = (θ, η) with θ's lower bounds.

These models are not written through `model.user.GroupModel`: profiling β and σ needs sums over
all groups before the criterion is formed, which a sum of per-group log-likelihoods cannot express;
the profiled form has fewer parameters and reuses lme4's decomposition (and its estimates of b).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from .design import Design, DesignError, GroupBucket, NotYetSupportedError, bucket_length, build_design
from .design_cache import DesignCache
from .prior import weighted_design
from .fit import SINGLE_FIT_OPTIONS, ModelFit, ols_coefficients
from .likelihood import lmm
from .messages import warn
from .model.layout import FactorStructure, theta_layout
from .model.residual import AR1, Residual, ResidualSpecError, VarIdent, bind
from .optimize import minimize
from .precision import float64


@jax.tree_util.register_dataclass
@dataclass(frozen=True)
class ResidualData:
    """Padded per-group tensors (rows sorted by time within groups), per-row structure inputs
    `aux` (groups × rows × 2) per bucket, the centring β₀, the static layout, and Σ log w_i of prior
    weights (rows then already scaled by √w_i: log|R_g| gains −Σ_g log w_i)."""

    buckets: tuple
    aux: tuple
    beta0: jax.Array
    residual: Residual = field(metadata=dict(static=True))
    n_theta: int = field(metadata=dict(static=True))
    n_slots: int = field(metadata=dict(static=True))
    structure: FactorStructure = field(metadata=dict(static=True))
    stacked: bool = field(default=False, metadata=dict(static=True))
    log_weights: float = 0.0

    def with_response(self, ys: tuple, beta0) -> "ResidualData":
        """The same model with other padded responses (one (groups × rows) array per bucket)."""
        buckets = tuple(dataclasses.replace(b, y=y) for b, y in zip(self.buckets, ys))
        return dataclasses.replace(self, buckets=buckets, beta0=beta0)


def residual_data(design: Design, values: dict, correlation, variance) -> ResidualData:
    """Bind the structures to the design's rows (`values`: column → values in the design's row order;
    prior weights under PRIOR_WEIGHTS scale the rows by √w, a fixed factor of each row's residual sd)."""
    if PRIOR_WEIGHTS in values:
        w = np.asarray(values[PRIOR_WEIGHTS], dtype=float)
        data = residual_data(weighted_design(design, w, np.zeros_like(w)),
                             {k: v for k, v in values.items() if k != PRIOR_WEIGHTS}, correlation, variance)
        return dataclasses.replace(data, log_weights=float(np.sum(np.log(w))))
    info = design.info
    if len(info.factors) > 1:
        raise NotYetSupportedError("residual structures need a single grouping factor "
                                   f"(this model has {len(info.factors)})")
    try:
        residual, aux_rows = bind(correlation, variance, values, np.asarray(info.group_codes))
    except ResidualSpecError as exc:
        raise DesignError(str(exc)) from None
    buckets, aux = [], []
    for b in design.buckets:
        rows, mask = np.asarray(b.rows), np.asarray(b.mask)
        a = aux_rows[rows]
        order = np.argsort(np.where(mask > 0, a[..., 0], np.inf), axis=1, kind="stable")

        def sort(v):
            v = np.asarray(v)
            return np.take_along_axis(v, order.reshape(order.shape + (1,) * (v.ndim - 2)), axis=1)

        buckets.append(GroupBucket(sort(b.X), sort(b.Z), sort(b.y), sort(mask), np.asarray(b.group), sort(rows)))
        aux.append(sort(a))  # padding cells hold row 0's inputs: valid values, so derivatives stay finite
    layout = theta_layout(info.terms)
    return ResidualData(tuple(buckets), tuple(aux), ols_coefficients(info.X, info.y), residual, layout.size,
                        bucket_length(info.n_groups + 1), layout.factor(0), _stackable(residual, buckets, aux))


def _levels(residual: Residual) -> int:
    """How many distinct residual sds the stacked statistics keep apart (one without VarIdent)."""
    return len(residual.variance.levels) if isinstance(residual.variance, VarIdent) else 1


def _stackable(residual: Residual, buckets, aux) -> bool:
    """Whether `StackedStats` apply: no correlation or AR(1) with every within-group gap 1, no variance
    function or VarIdent, and few enough parts (at most the longest group's padded rows, or 16)."""
    cor, var, L = residual.correlation, residual.variance, _levels(residual)
    if var is not None and not isinstance(var, VarIdent):
        return False
    if cor is None:
        return True
    if not isinstance(cor, AR1) or cor.continuous:
        return False
    parts = 3 * L + L * L
    unit = all(np.all(np.diff(a[..., 0], axis=1)[np.asarray(b.mask)[:, 1:] > 0] == 1) for b, a in zip(buckets, aux))
    return unit and parts <= max(16, max(np.asarray(b.mask).shape[1] for b in buckets))


@jax.tree_util.register_dataclass
@dataclass(frozen=True)
class StackedStats:
    """Per group slot, the whitened cross-products as a sum Σ_k c_k(η) A_k of fixed parts A_k, so that
    each evaluation costs O(groups), not O(rows), and a bootstrap replicate forms them once.

    With w_t = (x_t, z_t, y_t − x_tβ₀) the rows, s_l = 1/d_l the inverse sd of level l (VarIdent; one
    level without it) and a_t the level of row t: without a correlation the parts are S_l = Σ_{a_t = l}
    w_tw_tᵀ with c = s_l². With AR(1) at unit gaps, e_1 = s_{a_1}w_1 and e_t = (s_{a_t}w_t − Phi
    s_{a_(t−1)}w_{t−1})/√(1 − Phi²), so the parts are the first rows F_l, over t ≥ 2 the rows N_l, their
    predecessors P_l, and the pairs X_ab = Σ (w_tw_{t−1}ᵀ + w_{t−1}w_tᵀ) with a_t = a, a_{t−1} = b, with
    c = s_l², s_l²/(1 − Phi²), Phi²s_l²/(1 − Phi²) and −Phi s_a s_b/(1 − Phi²).
    `rows` counts each slot's rows and `level_rows` each level's (for log|R_g|); `column`, when given,
    replaces the parts' last column (another response's, see `with_column`)."""

    parts: jax.Array
    rows: jax.Array
    level_rows: jax.Array
    data: ResidualData
    column: jax.Array | None = None

    @property
    def n_theta(self) -> int:
        return self.data.n_theta

    @property
    def beta0(self) -> jax.Array:
        return self.data.beta0


def stacked_stats(data: ResidualData) -> StackedStats:
    """The stacked statistics of `data` (its y centred at β₀)."""
    L = _levels(data.residual)
    parts = None
    rows, level_rows = jnp.zeros(data.n_slots), jnp.zeros(L)
    for b, aux in zip(data.buckets, data.aux):
        w = _rows(b, data.beta0)
        new = _products(data.residual, b.mask, aux, w, w)
        parts = jnp.zeros((new.shape[0], data.n_slots) + new.shape[2:]) if parts is None else parts
        parts = parts.at[:, b.group].add(new)
        rows = rows.at[b.group].add(jnp.sum(b.mask, axis=1))
        level_rows = level_rows + jnp.sum(_level(data.residual, b.mask, aux), axis=(0, 1))
    return StackedStats(parts, rows, level_rows, data)


def response_column(st: StackedStats, ys: tuple, beta0) -> jax.Array:
    """The parts' last column (the cross-products with y) for other responses (padded per bucket, centred
    at their β₀): all that changes between responses (`with_column`)."""
    data = st.data.with_response(ys, beta0)
    column = jnp.zeros(st.parts.shape[:-1])
    for b, aux in zip(data.buckets, data.aux):
        w = _rows(b, beta0)
        column = column.at[:, b.group].add(_products(data.residual, b.mask, aux, w, w[..., -1:])[..., 0])
    return column


def with_column(st: StackedStats, column: jax.Array, beta0) -> StackedStats:
    """`st` for another response, given its `response_column` and β₀ (the shared parts are not copied)."""
    return StackedStats(st.parts, st.rows, st.level_rows, dataclasses.replace(st.data, beta0=beta0), column)


def _rows(b: GroupBucket, beta0) -> jax.Array:
    """w_t = (x_t, z_t, y_t − x_tβ₀) per padded row (0 in padding)."""
    return jnp.concatenate([b.X, b.Z, ((b.y - b.X @ beta0) * b.mask)[..., None]], axis=-1)


def _level(residual: Residual, mask, aux) -> jax.Array:
    """Each row's level as a one-hot vector (0 in padding): (groups, rows, levels)."""
    return jax.nn.one_hot(aux[..., 1].astype(jnp.int32), _levels(residual), dtype=mask.dtype) * mask[..., None]


def _products(residual: Residual, mask, aux, left, right) -> jax.Array:
    """The parts of `StackedStats` for Σ left_t right_tᵀ in one bucket: (parts, groups, a, c)."""
    level = _level(residual, mask, aux)
    if residual.correlation is None:
        return jnp.einsum("gtl,gti,gtj->lgij", level, left, right)
    L = level.shape[-1]
    at, prev = level[:, 1:], level[:, :-1] * mask[:, 1:, None]
    cross = (jnp.einsum("gta,gtb,gti,gtj->abgij", at, prev, left[:, 1:], right[:, :-1])
             + jnp.einsum("gta,gtb,gti,gtj->abgij", at, prev, left[:, :-1], right[:, 1:]))
    return jnp.concatenate([jnp.einsum("gl,gi,gj->lgij", level[:, 0], left[:, 0], right[:, 0]),
                            jnp.einsum("gtl,gti,gtj->lgij", at, left[:, 1:], right[:, 1:]),
                            jnp.einsum("gtl,gti,gtj->lgij", prev, left[:, :-1], right[:, :-1]),
                            cross.reshape((L * L,) + cross.shape[2:])])


def prepare(data: ResidualData):
    """What the criterion reads: the stacked statistics where they apply, else the padded tensors."""
    return stacked_stats(data) if data.stacked else data


def whitened_stats(eta: jax.Array, data) -> tuple[lmm.Stats, jax.Array]:
    """lme4's sufficient statistics of the whitened model and Σ_g log|R_g| at η (`data`: from `prepare`)."""
    if isinstance(data, StackedStats):
        stats, logdet = _stacked_whitened(eta, data)
        return stats, logdet - data.data.log_weights
    res = data.residual
    buckets, logdet = [], jnp.zeros((), eta.dtype)
    for b, aux in zip(data.buckets, data.aux):
        p, q = b.X.shape[-1], b.Z.shape[-1]
        T = res.whiten(eta, aux, jnp.concatenate([b.X, b.Z, b.y[..., None]], axis=-1), b.mask)
        buckets.append(dataclasses.replace(b, X=T[..., :p], Z=T[..., p:p + q], y=T[..., -1]))
        logdet = logdet + jnp.sum(res.logdet(eta, aux, b.mask))
    parts = lmm.group_stats(tuple(buckets), data.beta0, data.n_slots)
    return lmm.Stats(*parts, structure=data.structure), logdet - data.log_weights


def _stacked_whitened(eta: jax.Array, st: StackedStats) -> tuple[lmm.Stats, jax.Array]:
    res = st.data.residual
    L = st.level_rows.shape[0]
    log_sd = (jnp.log(res.variance.sd(eta[res.n_cor:], jnp.arange(L))) if res.variance is not None
              else jnp.zeros(L, eta.dtype))
    s2 = jnp.exp(-2.0 * log_sd)
    logdet = 2.0 * jnp.sum(st.level_rows * log_sd)
    if res.correlation is None:
        coef = s2
    else:
        phi = res.correlation.natural(eta[:res.n_cor])[0]
        scale = 1.0 / (1.0 - phi * phi)
        s = jnp.exp(-log_sd)
        coef = jnp.concatenate([s2, s2 * scale, phi * phi * s2 * scale, -phi * scale * jnp.outer(s, s).ravel()])
        logdet = logdet + jnp.sum(jnp.maximum(st.rows - 1.0, 0.0)) * jnp.log1p(-phi * phi)
    W = jnp.einsum("k,kgij->gij", coef, st.parts[..., :-1, :-1])
    Wy = jnp.einsum("k,kgi->gi", coef, st.parts[..., -1] if st.column is None else st.column)
    b = st.data.buckets[0]
    p, q = b.X.shape[-1], b.Z.shape[-1]
    z = slice(p, p + q)
    total, total_y = jnp.sum(W, axis=0), jnp.sum(Wy, axis=0)
    stats = lmm.Stats(W[:, z, z], W[:, z, :p], Wy[:, z], total[:p, :p], total_y[:p], total_y[-1],
                      jnp.sum(st.rows), structure=st.data.structure)
    return stats, logdet


def objective(x: jax.Array, data, reml: jax.Array) -> jax.Array:
    """The profiled REML criterion or ML deviance (−2 log-likelihood) at x = (θ, η)."""
    stats, logdet = whitened_stats(x[data.n_theta:], data)
    return lmm.objective(x[:data.n_theta], stats, reml) + logdet


def estimates(x: jax.Array, data, reml: jax.Array) -> lmm.Estimates:
    """β̂ (GLS, relative to β₀), σ̂, vcov(β̂), b̂ and cov(b | y) at x, with the full criterion."""
    stats, logdet = whitened_stats(x[data.n_theta:], data)
    est = lmm.estimates(x[:data.n_theta], stats, reml)
    return est._replace(objective=est.objective + logdet)


def _bounds(data: ResidualData, lower_theta: np.ndarray) -> np.ndarray:
    return np.concatenate([lower_theta, np.full(len(data.residual.names), -np.inf)])


@partial(jax.jit, static_argnames=("max_iter",), compiler_options=SINGLE_FIT_OPTIONS)
def _fit(data: ResidualData, x0, lower, reml, max_iter: int = 200):
    data = prepare(data)
    state = minimize(objective, x0, lower, (data, reml), max_iter=max_iter)
    return state, estimates(state.x, data, reml)


class ResidualFit(NamedTuple):
    """What a fit with a residual structure adds to an lmer fit: the bound structure, η̂, its data, and
    the structures and column values it was made from (to refit)."""

    residual: Residual
    eta: np.ndarray
    data: ResidualData
    spec: tuple = ()


FITTED = "fitted"  # a variance covariate that is the model's fitted values (nlme's ~fitted(.))


class Bound(NamedTuple):
    """Structures bound to a design, on the device: the data, the start (θ then η) and the lower bounds."""

    data: ResidualData
    x0: jax.Array
    lower: jax.Array


@dataclass
class Prepared:
    """A design with the structure columns' values (design row order), and the structures already bound
    to it (`bound`: (correlation, variance) → `Bound`), kept by `DESIGNS`."""

    design: Design
    values: dict
    bound: dict = field(default_factory=dict)

    def bind(self, correlation, variance) -> Bound:
        """The structures bound to this design's rows, bound once per pair of structures."""
        key = (correlation, variance)
        if key not in self.bound:
            data = residual_data(self.design, self.values, correlation, variance)
            layout = theta_layout(self.design.info.terms)
            x0 = np.concatenate([layout.start(), data.residual.start()])
            self.bound[key] = jax.device_put(Bound(data, x0, _bounds(data, layout.lower)))
        return self.bound[key]


DESIGNS = DesignCache()


PRIOR_WEIGHTS = "(weights)"  # the column of prior weights beside a residual correlation (see results.lmer)


def prepare_design(formula: str, data: pd.DataFrame, correlation, variance) -> Prepared:
    """The design of `formula` on `data`'s rows with the structure columns present, reused from `DESIGNS`
    while the columns it reads are unchanged (prior weights: a PRIOR_WEIGHTS column)."""
    weighted = isinstance(data, pd.DataFrame) and PRIOR_WEIGHTS in data.columns
    columns = structure_columns(correlation, variance) + ([PRIOR_WEIGHTS] if weighted else [])

    def build() -> tuple[Prepared, list]:
        design = build_design(formula, residual_rows(data, correlation, variance))
        values = {c: data.loc[design.info.row_index, c].to_numpy() for c in columns}
        return Prepared(design, values), design.info.parsed.variables + columns

    if not isinstance(data, pd.DataFrame):
        return build()[0]
    return DESIGNS.get((formula, tuple(columns)), data, build)


def fit_residual_model(design: Design | Prepared, values: dict, correlation, variance, reml: bool,
                       max_iter: int = 200, rounds: int = 200, tol: float = 1e-10) -> tuple[ModelFit, np.ndarray, ResidualFit]:
    """Fit; returns the lmer-shaped fit (state over θ only), β₀ and the residual part (`design` may be
    a `Prepared` one, whose bound structures are reused).

    A variance function of the fitted values follows nlme: fit with the last fit's fitted values
    (Xβ̂ + Zb̂) held as the covariate, starting from the fit without the variance function, until the
    fitted values settle (to `tol` relative). The result is that fixed point, not one likelihood's optimum.
    """
    prepared = design if isinstance(design, Prepared) else Prepared(design, values)
    if variance is None or FITTED not in variance.columns:
        return _fit_once(prepared, correlation, variance, reml, max_iter)
    raw, beta0, _ = _fit_once(prepared, correlation, None, reml, max_iter)
    design = prepared.design
    fitted = _fitted_values(design, raw, beta0)
    for _ in range(rounds):
        rounded = Prepared(design, {**prepared.values, FITTED: fitted})
        raw, beta0, residual = _fit_once(rounded, correlation, variance, reml, max_iter)
        fitted, before = _fitted_values(design, raw, beta0), fitted
        if np.max(np.abs(fitted - before)) <= tol * max(1.0, np.max(np.abs(before))):
            return raw, beta0, residual
    warn(f"the fitted values did not settle in {rounds} rounds of the variance function's update")
    return raw, beta0, residual


def _fitted_values(design: Design, raw: ModelFit, beta0: np.ndarray) -> np.ndarray:
    """Xβ̂ + Zb̂ per row (one grouping factor)."""
    info = design.info
    return info.X @ (beta0 + raw.est.beta) + np.einsum("nq,nq->n", info.Z, raw.modes[0][info.group_codes])


def _fit_once(prepared: Prepared, correlation, variance, reml: bool,
              max_iter: int) -> tuple[ModelFit, np.ndarray, ResidualFit]:
    bound = prepared.bind(correlation, variance)
    state, est = jax.tree_util.tree_map(np.asarray, _fit(bound.data, bound.x0, bound.lower, np.float64(reml),
                                                         max_iter=max_iter))
    k, G = bound.data.n_theta, prepared.design.info.n_groups
    raw = ModelFit(state._replace(x=state.x[:k]), est, (est.b[:G],), (est.b_cov[:G],))
    return raw, np.asarray(bound.data.beta0), ResidualFit(bound.data.residual, state.x[k:], bound.data,
                                                          (correlation, variance, prepared.values))


def structure_columns(correlation, variance) -> list[str]:
    """The data columns the residual structures read (not `fitted`, which the fit supplies)."""
    return list(dict.fromkeys(c for s in (correlation, variance) if s is not None for c in s.columns if c != FITTED))


def residual_rows(data: pd.DataFrame, correlation, variance) -> pd.DataFrame:
    """`data` without the rows whose structure columns are missing (named in the error if a column is absent)."""
    if not isinstance(data, pd.DataFrame):
        raise DesignError(f"data must be a pandas DataFrame, got {type(data).__name__}")
    columns = structure_columns(correlation, variance)
    absent = [c for c in columns if c not in data.columns]
    if absent:
        raise DesignError(f"column {absent[0]!r} of the residual structure is not in the data")
    keep = data[columns].notna().all(axis=1).to_numpy()
    if not keep.all():
        warn(f"{int((~keep).sum())} row(s) with missing values in {', '.join(columns)} were dropped")
    return data.loc[keep]


# ---- simulated responses (refitted in `batch.residual`) ----------------------------------------------

@partial(jax.jit, static_argnames=("nsim",))
def _simulate_buckets(key, data: ResidualData, beta, lam, sigma, eta, nsim: int):
    """Per bucket (nsim, groups, rows): Xβ + Zb + σK⁻¹z with b = σΛu; u, z standard normal."""
    out = []
    for k, (b, aux) in enumerate(zip(data.buckets, data.aux)):
        k_u, k_e = jax.random.split(jax.random.fold_in(key, k))
        G, n_b = b.mask.shape
        u = jax.random.normal(k_u, (nsim, G, lam.shape[0]), dtype=beta.dtype)
        random = sigma * jnp.einsum("gnq,sgq->sgn", b.Z, u @ lam.T)
        z = jax.random.normal(k_e, (nsim, G, n_b), dtype=beta.dtype)
        noise = jax.vmap(lambda e: data.residual.unwhiten(eta, aux, e[..., None], b.mask)[..., 0])(z)
        out.append(((b.X @ beta)[None] + random + sigma * noise) * b.mask)
    return tuple(out)


@float64
def simulate(model, nsim: int, seed: int) -> np.ndarray:
    """nsim responses (nsim × n, rows as the model's data) from a fit with a residual structure."""
    data = model.residual.data
    parts = _simulate_buckets(jax.random.PRNGKey(seed), data, jnp.asarray(model.fixef.to_numpy()),
                              jnp.asarray(model.lambda_matrix), model.sigma, jnp.asarray(model.residual.eta), nsim)
    y = np.zeros((nsim, model.nobs))
    for b, part in zip(data.buckets, parts):
        mask = np.asarray(b.mask) > 0
        y[:, np.asarray(b.rows)[mask]] = np.asarray(part)[:, mask]
    return y


# ---- scaled residuals ------------------------------------------------------------------------------------

@float64
def scaled_residuals(model, kind: str) -> np.ndarray:
    """nlme's residuals(fit, type = kind) of a fit with a residual structure, rows as the model's data:
    "pearson" r_i√w_i/(σd_i) (r = y − Xβ̂ − Zb̂, w the prior weights); "normalized" those multiplied per group by the correlation's
    factor F_g (F_gᵀF_g = C_g⁻¹, nlme's: the inverse Cholesky factor for AR(1), Helmert for CompSymm)."""
    data, eta = model.residual.data, jnp.asarray(model.residual.eta)
    res = data.residual
    r = (model.info.y - model.fitted().to_numpy()) * np.sqrt(1.0 if model.prior is None else model.prior[0])
    out = np.zeros_like(r)
    for b, aux in zip(data.buckets, data.aux):
        rows, mask = np.asarray(b.rows), jnp.asarray(b.mask)
        e = jnp.asarray(r[rows]) * mask / (model.sigma * res.sd(eta, aux, mask))
        if kind == "normalized" and res.correlation is not None:
            e = res.correlation.normalize(eta[:res.n_cor], aux[..., 0], e[..., None], mask)[..., 0]
        keep = np.asarray(b.mask) > 0
        out[rows[keep]] = np.asarray(e)[keep]
    return out
