"""Design → sufficient statistics → θ̂ and the estimates at θ̂, in one jit-compiled program.

Shapes are bucketed (groups padded to a power of two) so a second model of a
similar size reuses the compiled program instead of recompiling.
"""
from __future__ import annotations

import dataclasses
from functools import partial
from typing import NamedTuple

import jax
import numpy as np

from . import fixed
from .design import Design, DesignError, bucket_length, with_response
from .likelihood import crossed, crossed_newton, sums, wide
from .model.layout import theta_layout
from .likelihood.lmm import Estimates, Stats, estimates, objective
from .optimize import NewtonState, gradient_and_hessian, minimize
from .checks import check_identifiable
from .formula.sparse import issparse, scipy_sparse
from .compile_time import ONCE, Program
from .precision import one_blas_thread
from .scaling import Scales, design_scales, scale_design


class RawFit(NamedTuple):
    """Optimiser state and estimates at θ̂, as arrays (β relative to β₀)."""

    state: NewtonState
    est: Estimates


def ols_coefficients(X, y: np.ndarray) -> np.ndarray:
    """Least-squares β of y on X, dense or sparse (the reference point y is centred at)."""
    return fixed.least_squares(X, y) if issparse(X) else np.linalg.lstsq(X, y, rcond=None)[0]


def design_stats(design: Design, y: np.ndarray | None = None) -> tuple[Stats, np.ndarray]:
    """Sufficient statistics of `design`'s first factor (optionally with another response y) and their β₀."""
    if y is not None:
        design = with_response(design, y)
    info = design.info
    beta0 = ols_coefficients(info.X, info.y)
    n_slots = bucket_length(info.n_groups + 1)
    parts = fixed.group_sums(info.X, info.Z, info.group_codes, info.y - info.X @ beta0, n_slots)
    return Stats(*jax.device_put(parts), structure=theta_layout(info.terms).factor(0)), beta0


# XLA's CPU fusion emitters make compile time dominate a single fit; the classic emitters compile the
# same program in about half the time with no run-time cost (measured in benchmarks/bench_startup.py).
SINGLE_FIT_OPTIONS = {"xla_cpu_use_fusion_emitters": False}


# The criteria as jitted functions: inside a fit's program their evaluations (the start, the line search, the
# final step) share one trace and lowering, which cuts the first fit's tracing by about a fifth.
crossed_objective = jax.jit(crossed.objective)
_wide_objective = jax.jit(wide.objective)


@jax.jit
def crossed_derivatives(theta, stats: crossed.CrossedStats, reml):
    """(f, ∇f, ∇²f) of the blocked-Cholesky criterion (several grouping factors), exact, by autodiff: the form
    batches and profiles take (single fits take `crossed_newton`'s trace identities)."""
    g, H = gradient_and_hessian(crossed.objective, theta, (stats, reml))
    return crossed.objective(theta, stats, reml), g, H


@jax.jit
def gaussian_objective(theta, stats: Stats, reml):
    """The profiled criterion: the per-group-sums form where every θ is an entry of Λ, else the PLS form."""
    return sums.objective(theta, stats, reml) if sums.applies(stats) else objective(theta, stats, reml)


@jax.jit
def gaussian_derivatives(theta, stats: Stats, reml):
    """(f, ∇f, ∇²f): closed form where `sums` applies (no autodiff through the per-group factorisations), else
    autodiff; single fits and batches (`batch.targets`) take the same two functions."""
    if sums.applies(stats):
        return sums.objective_derivatives(theta, stats, reml)
    g, H = gradient_and_hessian(objective, theta, (stats, reml))
    return objective(theta, stats, reml), g, H


def _gaussian_derivs(fun, theta: jax.Array, args) -> tuple[jax.Array, jax.Array]:
    """`gaussian_derivatives` in `minimize`'s `derivs` form: (∇f, ∇²f)."""
    return gaussian_derivatives(theta, *args)[1:]


def _fit_stats(stats: Stats, theta0: jax.Array, lower: jax.Array, reml: jax.Array, max_iter: int = 200) -> RawFit:
    """Minimise the profiled criterion over θ ≥ lower and evaluate the estimates at θ̂. Where every θ is an
    entry of Λ, the criterion and its derivatives are the per-group-sums forms: no autodiff through the
    per-group factorisations, so the program traces and compiles faster and runs twice as fast."""
    state = minimize(gaussian_objective, theta0, lower, (stats, reml), max_iter=max_iter, derivs=_gaussian_derivs)
    return RawFit(state, estimates(state.x, stats, reml))


fit_stats = Program(_fit_stats, "fit_stats", static_argnames=("max_iter",), compiler_options=SINGLE_FIT_OPTIONS,
                    quick_options=ONCE)


class ModelFit(NamedTuple):
    """A fit as numpy arrays: optimiser state, estimates, and per grouping factor the conditional
    modes (levels, q) and their covariances (levels, q, q), factors in the design's order; `scales`: the
    column scales the fit was computed in (see `scaling`)."""

    state: NewtonState
    est: Estimates
    modes: tuple
    mode_covs: tuple
    scales: Scales | None = None


DENSE_BYTES_LIMIT = 8 * 2 ** 30


def dense_columns(info) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Where each row's random-effect columns of the factors after the first sit in the dense part:
    factor offsets (k + 1,), column indices (n, Σq_k) into Q₂ = offsets[-1], and the Z values there."""
    others = info.factors[1:]
    offsets = np.cumsum([0] + [f.n_levels * f.q for f in others])
    idx = np.concatenate([np.zeros((info.nobs, 0), np.int64)] + [offsets[k] + f.codes[:, None] * f.q + np.arange(f.q)
                                                                for k, f in enumerate(others)], axis=1)
    val = np.concatenate([np.zeros((info.nobs, 0))] + [f.Z for f in others], axis=1)
    return offsets, idx, val


def crossed_stats(design: Design, y: np.ndarray | None = None) -> tuple[crossed.CrossedStats, np.ndarray]:
    """Statistics of a multi-factor design: the first factor's as `design_stats`, the others dense,
    and the sparse cross-tabulation Z₂ᵀZ₁ with its pairs (see `likelihood.crossed`)."""
    first, beta0 = design_stats(design, y)
    info = design.info
    yc = (info.y if y is None else np.asarray(y, float)) - info.X @ beta0
    others = info.factors[1:]
    offsets, idx, val = dense_columns(info)
    Q2 = int(offsets[-1])
    g1, Z1 = info.group_codes, info.Z
    G1 = info.n_groups
    keys = (idx * G1 + g1[:, None]).ravel()
    entry_keys, entry_of = np.unique(keys, return_inverse=True)
    E = entry_keys.size
    counts = np.bincount(entry_keys % G1, minlength=G1)
    n_pairs = int((counts.astype(np.int64) * (counts + 1) // 2).sum())
    _check_memory(Q2, E, n_pairs, others)
    weights = (val[:, :, None] * Z1[:, None, :]).reshape(-1, Z1.shape[1])
    cross_val = np.stack([np.bincount(entry_of, weights[:, j], minlength=E) for j in range(Z1.shape[1])], axis=1)
    cross_row, cross_group = entry_keys // G1, entry_keys % G1
    pair_a, pair_b = _pairs_within_groups(cross_group)
    pair_val = cross_val[pair_a][:, :, None] * cross_val[pair_b][:, None, :]
    flat = (idx[:, :, None] * Q2 + idx[:, None, :]).ravel()
    Z2tZ2 = np.bincount(flat, (val[:, :, None] * val[:, None, :]).ravel(), minlength=Q2 * Q2).reshape(Q2, Q2)
    Z2tX = fixed.segment_products(idx, val, Q2, info.X)
    Z2ty = np.bincount(idx.ravel(), (val * yc[:, None]).ravel(), minlength=Q2)
    layout = theta_layout(info.terms)
    blocks = [(int(offsets[k - 1]), f.n_levels, f.q, layout.factor(k)) for k, f in enumerate(others, start=1)]
    stats = crossed.CrossedStats(first, Z2tZ2, Z2tX, Z2ty, cross_row.astype(np.int32), cross_group.astype(np.int32),
                                 cross_val, cross_row[pair_a].astype(np.int32), cross_row[pair_b].astype(np.int32),
                                 cross_group[pair_a].astype(np.int32), pair_val,
                                 *_dense_cross(cross_row, cross_group, cross_val, pair_a, pair_b, Q2, first.ZtZ.shape[0]),
                                 blocks=tuple(blocks))
    return stats, beta0


DENSE_CROSS_LIMIT = 200_000


def _dense_cross(row, group, val, pair_a, pair_b, Q2: int, n_slots: int):
    """Z₂ᵀZ₁ (Q₂, l₁q₁) and the map vec(W) → F Fᵀ (l₁q₁q₁, Q₂Q₂) as dense arrays when they are small
    (then the criterion uses matrix products instead of scatters); (0, 0) arrays otherwise."""
    q1 = val.shape[1]
    if Q2 == 0 or n_slots * q1 * q1 * Q2 * Q2 > DENSE_CROSS_LIMIT:
        return np.zeros((0, 0)), np.zeros((0, 0))
    cross = np.zeros((Q2, n_slots, q1))
    np.add.at(cross, (row, group), val)
    pairs = np.zeros((n_slots, q1, q1, Q2, Q2))
    va, vb = val[pair_a], val[pair_b]
    ra, rb, g = row[pair_a], row[pair_b], group[pair_a]
    np.add.at(pairs, (g, slice(None), slice(None), ra, rb), va[:, :, None] * vb[:, None, :])
    off = ra != rb   # the mirrored entry of each pair of distinct entries
    np.add.at(pairs, (g[off], slice(None), slice(None), rb[off], ra[off]), vb[off][:, :, None] * va[off][:, None, :])
    return cross.reshape(Q2, -1), pairs.reshape(n_slots * q1 * q1, Q2 * Q2)


def _pairs_within_groups(group: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """All pairs a ≤ b (in sorted position) of entries with the same group, in any entry order: for the
    entry at sorted position i, its partners are positions i, ..., the end of its group. Only arrays of
    the number of pairs P are made (int32 while positions fit), not of Σ counts² ≈ 2P."""
    order = np.argsort(group, kind="stable")
    E = len(order)
    index = np.int32 if E < 2 ** 31 else np.int64
    partners = (np.cumsum(np.bincount(group))[group[order]] - np.arange(E)).astype(index)
    a = np.repeat(np.arange(E, dtype=index), partners)
    first_pair = np.cumsum(partners, dtype=np.int64) - partners
    b = a + (np.arange(a.size, dtype=np.int64) - np.repeat(first_pair, partners)).astype(index)
    order = order.astype(index)
    return order[a], order[b]


def _check_memory(Q2: int, E: int, n_pairs: int, others) -> None:
    """Fail early, naming the term, when the dense part would not fit."""
    need = 8 * (3 * Q2 * Q2 + 3 * E + 4 * n_pairs)
    if need > DENSE_BYTES_LIMIT:
        big = max(others, key=lambda f: f.n_levels * f.q)
        raise DesignError(
            f"the random effects after the first factor need a dense {Q2} x {Q2} block "
            f"(term on {big.name!r}: {big.n_levels} levels x {big.q} columns) and about {need / 2**30:.1f} GiB; "
            f"the limit is {DENSE_BYTES_LIMIT / 2**30:.0f} GiB")


@partial(jax.jit, static_argnames=("max_iter",), compiler_options=SINGLE_FIT_OPTIONS)
def fit_crossed(stats: crossed.CrossedStats, theta0: jax.Array, lower: jax.Array, reml: jax.Array,
                max_iter: int = 200):
    """`fit_stats` for several grouping factors: θ̂ and the estimates at θ̂, by projected Newton with the exact
    Hessian from trace identities (`likelihood.crossed_newton`: a Cholesky factorisation, an inverse and a product per step)."""
    state = minimize(crossed_objective, theta0, lower, (stats, reml), max_iter=max_iter,
                     derivs=crossed_newton.newton_derivatives)
    return state, crossed.estimates(state.x, stats, reml)


def wide_stats(design: Design, first: Stats, beta0: np.ndarray) -> wide.WideStats:
    """Statistics of the wide path (`likelihood.wide`): C = [Z₂ X y]ᵀ[Z₂ X y] and the pairs of nonzero
    entries of [Z₂ X y]ᵀZ₁ that share a level of the first factor, from the sparse X."""
    info = design.info
    n, others = info.nobs, info.factors[1:]
    offsets = np.cumsum([0] + [f.n_levels * f.q for f in others])
    Q2 = int(offsets[-1])
    sp = scipy_sparse()
    blocks = [info.X, sp.csr_matrix((info.y - info.X @ beta0)[:, None])]
    if others:
        idx = np.concatenate([offsets[k] + f.codes[:, None] * f.q + np.arange(f.q) for k, f in enumerate(others)], 1)
        val = np.concatenate([f.Z for f in others], axis=1)
        rows = np.repeat(np.arange(n), idx.shape[1])
        blocks.insert(0, sp.csr_matrix((val.ravel(), (rows, idx.ravel())), shape=(n, Q2)))
    R = sp.hstack(blocks, format="csc")
    k, q1, G1 = R.shape[1], info.q, info.n_groups
    Z1 = info.Z
    S1 = sp.csr_matrix((Z1.ravel(), (np.repeat(np.arange(n), q1), (info.group_codes[:, None] * q1
                        + np.arange(q1)).ravel())), shape=(n, G1 * q1))
    K = (S1.T @ R).tocoo()  # (G1·q1, k): level g, column j of Z1, row r of the reduced system
    keys = (K.row // q1) * k + K.col
    entry_keys, entry_of = np.unique(keys, return_inverse=True)
    cross_val = np.zeros((entry_keys.size, q1))
    np.add.at(cross_val, (entry_of, K.row % q1), K.data)
    row, group = entry_keys % k, entry_keys // k
    a, b = _pairs_within_groups(group)
    border = np.argsort(row[a] >= Q2, kind="stable")  # pairs touching the other factors' rows first
    a, b = a[border], b[border]
    layout = theta_layout(info.terms)
    G = first.ZtZ.shape[0]  # the wide criterion needs only the first factor's ZᵀZ: its ZᵀX is not carried
    first = dataclasses.replace(first, ZtX=np.zeros((G, q1, 0)), XtX=np.zeros((0, 0)), Xty=np.zeros(0))
    return wide.WideStats(first, fixed.gram(R), row.astype(np.int32), group.astype(np.int32), cross_val,
                          row[a].astype(np.int32), row[b].astype(np.int32),
                          group[a].astype(np.int32), cross_val[a][:, :, None] * cross_val[b][:, None, :], float(n),
                          p=info.p, Q2=Q2, blocks=tuple((int(offsets[j - 1]), f.n_levels, f.q, layout.factor(j))
                                                        for j, f in enumerate(others, start=1)),
                          n_border=int(np.count_nonzero(row[a] < Q2)))


@partial(jax.jit, static_argnames=("max_iter",), compiler_options=SINGLE_FIT_OPTIONS)
def fit_wide(stats: wide.WideStats, theta0: jax.Array, lower: jax.Array, reml: jax.Array, max_iter: int = 200):
    """θ̂ of the wide path (Newton with the exact derivatives of `wide.gradient_and_hessian`, by trace
    identities) and the estimates at θ̂ (`wide.estimates`)."""
    state = minimize(_wide_objective, theta0, lower, (stats, reml), max_iter=max_iter, derivs=wide.gradient_and_hessian)
    return state, wide.estimates(state.x, stats, reml)


def _wide_problem(design: Design) -> tuple[wide.WideStats, np.ndarray]:
    """The wide statistics and β₀ (the first factor's dense statistics are dropped on return)."""
    first, beta0 = design_stats(design)
    return wide_stats(design, first, beta0), beta0


def _fit_sparse(design: Design, args, max_iter: int) -> tuple[ModelFit, np.ndarray]:
    """The wide path: θ̂ and the estimates from `likelihood.wide`."""
    info = design.info
    G = info.n_groups
    w, beta0 = _wide_problem(design)
    return _several_factor_fit(fit_wide(w, *args, max_iter=max_iter), w.blocks, G), beta0


def _several_factor_fit(raw, blocks: tuple, G: int) -> ModelFit:
    """A ModelFit from a several-factor fit's (state, (estimates, dense-part modes, their covariances)): the
    first factor's modes from the estimates, each other factor's cut out of the dense part by its block."""
    state, (est, b2, b2_covs) = jax.tree_util.tree_map(np.asarray, raw)
    modes = [est.b[:G]] + [b2[offset:offset + levels * q].reshape(levels, q) for offset, levels, q, *_ in blocks]
    return ModelFit(state, est, tuple(modes), (est.b_cov[:G],) + tuple(b2_covs))


def fit_model(design: Design, reml: bool, max_iter: int = 200) -> tuple[ModelFit, np.ndarray]:
    """Fit any design (one or several grouping factors) on unit-scaled columns (see `scaling`) and map the
    fit back to the data's units; arrays come back as numpy. Returns (fit, β₀)."""
    info = design.info
    check_identifiable(info.factors, info.terms, info.nobs, info.p)
    layout = theta_layout(info.terms)
    scales = design_scales(design, layout)
    fit, beta0 = _fit_scaled(scale_design(design, scales), layout, reml, max_iter)
    return unscale_fit(fit, beta0, scales, design.info.nobs, reml)


def _fit_scaled(design: Design, layout, reml: bool, max_iter: int) -> tuple[ModelFit, np.ndarray]:
    """Fit a design as it is, from lme4's start (Λ = I)."""
    info = design.info
    flat = np.isin(layout.block, [k for k, f in enumerate(info.factors) if f.name in info.unidentified])
    start = np.where(flat, 0.0, layout.start())  # a variance the data cannot identify is reported as 0
    args = jax.device_put((start, np.asarray(layout.lower, float), np.asarray(float(reml))))
    G = info.n_groups
    if len(info.factors) == 1 and not info.sparse:  # small per-group blocks: no large factorisation in LAPACK
        stats, beta0 = design_stats(design)
        raw = jax.tree_util.tree_map(np.asarray, fit_stats(stats, *args, max_iter=max_iter))
        return ModelFit(raw.state, raw.est, (raw.est.b[:G],), (raw.est.b_cov[:G],)), beta0
    with one_blas_thread():  # dense blocks factored in LAPACK, whose OpenBLAS threads spin against XLA's
        if info.sparse:
            return _fit_sparse(design, args, max_iter)
        stats, beta0 = crossed_stats(design)
        args = (jax.device_put(np.where(flat, 0.0, crossed_newton.moment_start(stats, start))),) + args[1:]
        return _several_factor_fit(fit_crossed(stats, *args, max_iter=max_iter), stats.blocks, G), beta0


def unscale_fit(fit: ModelFit, beta0: np.ndarray, scales: Scales, n: int, reml: bool) -> tuple[ModelFit, np.ndarray]:
    """A fit in scaled units mapped back to the data's (θ, f, β, σ, cov(β), modes); the projected gradient
    stays the scaled problem's, which is free of units."""
    shift = scales.criterion_shift(n, reml)
    state = fit.state._replace(x=fit.state.x / scales.theta, f=fit.state.f + shift)
    est = fit.est._replace(beta=scales.beta(fit.est.beta), sigma=fit.est.sigma * scales.y,
                           vcov_beta=scales.vcov(fit.est.vcov_beta), b=scales.modes(0, fit.est.b),
                           b_cov=scales.mode_covs(0, fit.est.b_cov), objective=fit.est.objective + shift)
    modes = tuple(scales.modes(k, b) for k, b in enumerate(fit.modes))
    covs = tuple(scales.mode_covs(k, c) for k, c in enumerate(fit.mode_covs))
    return ModelFit(state, est, modes, covs, scales), scales.beta(beta0)
