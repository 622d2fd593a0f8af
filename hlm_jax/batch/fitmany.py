"""One model structure fitted to many data sets or many responses in one batched program."""
from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from ..design import DesignError, build_design, factor_codes
from ..formula import check_finite, parse_formula, response_values
from ..messages import require_bool, warn
from ..model.layout import theta_layout
from ..precision import float64
from ..fit import crossed_stats
from ..scaling import Scales, column_scales, design_scales, response_scale, rms, scale_design, theta_scales, z_scales
from .program import run_given
from .residual import residual_fit_many
from .results import BatchWarning
from .rows import CrossedTarget, crossed_target, row_statistics
from .stacked import stack
from .targets import Target, group_sums, make_target


def _random_matrix(info, frame: pd.DataFrame) -> np.ndarray:
    return np.column_stack([spec.matrix(frame)[:, list(cols)] for spec, cols in info.random_specs])


def _fixed_matrix(info, frame: pd.DataFrame) -> np.ndarray:
    X = info.fixed_spec.matrix(frame)
    return X[:, [info.fixed_spec.names.index(n) for n in info.fixed_names]]


def _frame_matrices(info, frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """X and Z of one frame in the first data set's coding, checked to be finite."""
    X, Z = _fixed_matrix(info, frame), _random_matrix(info, frame)
    check_finite(X, info.fixed_names, frame.index)
    check_finite(Z, [c for t in info.terms for c in t.columns], frame.index)
    return X, Z


def _matrices(info, frames: list[pd.DataFrame], big: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """X and Z of all data sets stacked; an error (a level the first data set lacks, a value that is not
    finite) names the data set it comes from."""
    try:
        return _frame_matrices(info, big)
    except DesignError:
        for i, frame in enumerate(frames):
            try:
                _frame_matrices(info, frame)
            except DesignError as exc:
                raise DesignError(f"data set {i}: {exc} (the model matrices follow the first data set's "
                                  "coding)") from None
        raise


def _check_frame(data, i: int, used: list[str]) -> pd.DataFrame:
    if not isinstance(data, pd.DataFrame):
        raise DesignError(f"data set {i} is a {type(data).__name__}, not a pandas DataFrame")
    absent = [c for c in used if c not in data.columns]
    if absent:
        raise DesignError(f"data set {i} lacks column {absent[0]!r}")
    frame = data[used]
    return frame.loc[frame.notna().all(axis=1).to_numpy()]


def _ols_per_problem(XtX: np.ndarray, Xty: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """β₀ per problem (m, p) and which problems have a full-rank X (R's lm rule, 1e-7 on column norms)."""
    p = XtX.shape[-1]
    ok = np.ones(len(XtX), bool)
    beta = np.zeros((len(XtX), p))
    for i in range(len(XtX)):
        try:
            L = np.linalg.cholesky(XtX[i])
        except np.linalg.LinAlgError:
            ok[i] = False
            continue
        if np.any(np.diag(L) ** 2 <= 1e-14 * np.maximum(np.diag(XtX[i]), 1e-300)):
            ok[i] = False
            continue
        beta[i] = np.linalg.solve(XtX[i], Xty[i])
    return beta, ok


def _table(info, fixed_names, fixef, se, out, extra: dict) -> pd.DataFrame:
    """One row per fit: fixed effects, their standard errors, σ, sds and correlations, objective, flags."""
    columns = {name: fixef[:, j] for j, name in enumerate(fixed_names)}
    columns.update({f"se_{name}": se[:, j] for j, name in enumerate(fixed_names)})
    columns["sigma"] = out["sigma"]
    layout = theta_layout(info.terms)
    vc = layout.sd_cor(out["theta"], out["sigma"])
    columns.update({name: vc[:, j] for j, name in enumerate(layout.varcorr_names())})
    columns["objective"] = out["objective"]
    columns["converged"] = out["converged"]
    columns["iterations"] = out["iterations"]
    columns.update(extra)
    return pd.DataFrame(columns)


@float64
def fit_many(formula: str, datasets=None, responses=None, REML: bool = True, chunk: int | None = None,
             progress: bool | None = None, max_iter: int = 200, correlation=None, weights=None) -> pd.DataFrame:
    """Fit one model structure to many data sets, or to many responses, in one batched program.
    `fit_many(glmm, responses=Y)`: a fitted hj.glmer model refitted to each column of Y.

    `fit_many(formula, [df1, df2, ...])`: each DataFrame its own design (its own groups and rows);
    the model matrices follow the first one's coding. `fit_many(formula, data, responses=Y)`: one
    design, Y (n × m array, or DataFrame of m columns, rows as `data`) replacing the response.

    Returns one row per fit: fixed effects, `se_<name>` (their standard errors), `sigma`, the sds
    and correlations (lme4's confint(oldNames=FALSE) names), `objective` (REML criterion or
    deviance), `converged`, `iterations`, and `nobs`/`ngroups`. Fits that cannot be made (X rank
    deficient in that data set, fewer than two groups) are NaN rows with converged False, reported
    in a warning. `correlation` / `weights` (a variance function) add a residual structure (as lmer's;
    with responses= only), and the rows gain its parameters. `table.attrs["timing"]`: the batched run's
    seconds, compile_s of them compiling.
    """
    if hasattr(formula, "refit_many"):   # a fitted GLMM: its structure refitted to each response
        return formula.refit_many(responses, max_iter=max_iter)
    REML = require_bool(REML, "REML")
    if correlation is not None or weights is not None:
        return residual_fit_many(formula, datasets, responses, REML, correlation, weights, max_iter, chunk, progress)
    if responses is not None:
        return _fit_responses(formula, datasets, responses, REML, chunk, progress, max_iter)
    if datasets is None or isinstance(datasets, pd.DataFrame):
        raise TypeError("fit_many needs a list of DataFrames, or one DataFrame and responses= (an n × m array)")
    datasets = list(datasets)
    if not datasets:
        raise ValueError("fit_many needs at least one data set")
    template = build_design(formula, datasets[0])
    info = template.info
    if len(info.factors) > 1:
        return _fit_crossed_datasets(formula, datasets, template, REML, chunk, progress, max_iter)
    used = info.parsed.variables
    frames = [_check_frame(d, i, used) for i, d in enumerate(datasets)]
    m = len(frames)
    sizes = np.array([len(f) for f in frames])
    big = pd.concat(frames, ignore_index=True)
    ds = np.repeat(np.arange(m), sizes)
    y = response_values(info.parsed.response_node, big)
    X, Z = _matrices(info, frames, big)
    layout = theta_layout(info.terms)
    x_scale, z_scale = column_scales(X), z_scales([Z], layout)   # common column units; each data set's y below
    X, Z = X / x_scale, Z / z_scale[0]
    codes = np.zeros(len(big), np.int64)
    for col in info.parsed.random[0].group:
        c, labels = factor_codes(big[col])
        codes = codes * len(labels) + c
    keys, local = np.unique(ds * (codes.max() + 1) + codes, return_inverse=True)
    key_ds = keys // (codes.max() + 1)
    n_groups = np.bincount(key_ds, minlength=m)
    local = local - np.searchsorted(key_ds, np.arange(m))[ds]
    G, p, q = int(n_groups.max()), X.shape[1], Z.shape[1]
    XtX = group_sums(ds, m, X, X)
    beta0, ok = _ols_per_problem(XtX, group_sums(ds, m, X, y[:, None])[:, :, 0])
    ok &= (n_groups >= 2) & (sizes > p)
    yc = y - np.einsum("np,np->n", X, beta0[ds])
    scales = Scales(x_scale, z_scale, _group_sd(y, ds, sizes), theta_scales(layout, z_scale))
    yc = yc / scales.y[ds]
    slot = ds * G + local
    data = (group_sums(slot, m * G, Z, Z).reshape(m, G, q, q), group_sums(slot, m * G, Z, X).reshape(m, G, q, p),
            group_sums(slot, m * G, Z, yc[:, None]).reshape(m, G, q), XtX,
            group_sums(ds, m, X, yc[:, None])[:, :, 0], np.bincount(ds, yc * yc, minlength=m), sizes.astype(float))
    if not ok.all():   # give the failed problems a harmless stand-in (a good one's statistics); NaN after
        stand_in = int(np.flatnonzero(ok)[0]) if ok.any() else None
        if stand_in is None:
            raise DesignError("no data set can be fitted (rank-deficient X or fewer than two groups in every one)")
        data = tuple(np.where(ok.reshape((m,) + (1,) * (a.ndim - 1)), a, a[stand_in]) for a in data)
    empty = jnp.zeros((0,))
    target = Target(empty, empty, empty, empty, jnp.asarray(layout.start(), dtype=float),
                    jnp.asarray(layout.lower, dtype=float), jnp.asarray(float(REML)), (), layout.factor(0))
    out, timing = run_given(target, data, m, chunk, progress, max_iter, "fit_many", (G, q, p, True))
    out = _blank_failed(scales.unscale_batch(out, sizes, REML), ok)
    fixef = beta0 / x_scale + out["beta"]
    fixef[~ok] = np.nan
    table = _table(info, info.fixed_names, fixef, out["se"], out, {"nobs": sizes, "ngroups": n_groups})
    table.attrs["timing"] = timing
    _report_failed(table, ok, "data set")
    return table


def _crossed_design(formula, data, i: int, template):
    """Data set i's design, checked to have the first one's fixed effects and grouping factors (in order)."""
    frame = _check_frame(data, i, template.info.parsed.variables)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            design = build_design(formula, frame)
    except DesignError as exc:
        raise DesignError(f"data set {i}: {exc}") from None
    info, first = design.info, template.info
    if info.fixed_names != first.fixed_names or [f.name for f in info.factors] != [f.name for f in first.factors]:
        raise DesignError(f"data set {i} has fixed effects {list(info.fixed_names)} and grouping factors "
                          f"{[f.name for f in info.factors]} (most levels first); data set 0 has "
                          f"{list(first.fixed_names)} and {[f.name for f in first.factors]}")
    return design


def _fit_crossed_datasets(formula, datasets, template, REML, chunk, progress, max_iter) -> pd.DataFrame:
    """fit_many over data sets with several grouping factors: each data set's own blocked-Cholesky statistics
    (in common X and Z units, its own y units), padded to one shape (`stacked`) and fitted in one program."""
    designs = [_crossed_design(formula, d, i, template) for i, d in enumerate(datasets)]
    infos = [d.info for d in designs]
    layout = theta_layout(template.info.terms)
    columns = design_scales(template, layout)
    ys = np.array([response_scale(info.y) for info in infos])
    all_stats, beta0 = zip(*(crossed_stats(scale_design(d, Scales(columns.x, columns.z, y, columns.theta)))
                             for d, y in zip(designs, ys)))
    data = (stack(list(all_stats)),)
    target = CrossedTarget(jax.tree_util.tree_map(lambda a: jnp.asarray(a[0]), data[0]), jnp.asarray(layout.start()),
                           jnp.asarray(layout.lower, dtype=float), jnp.asarray(float(REML)))
    sizes = np.array([info.nobs for info in infos])
    dims = (max(info.n_groups + sum(f.n_levels * f.q for f in info.factors[1:]) for info in infos),
            template.info.q, template.info.p, True)
    out, timing = run_given(target, data, len(designs), chunk, progress, max_iter, "fit_many", dims)
    out["beta"] = out["beta"] + np.array(beta0)
    out = Scales(columns.x, columns.z, ys, columns.theta).unscale_batch(out, sizes, REML)
    table = _table(template.info, template.info.fixed_names, out["beta"], out["se"], out,
                   {"nobs": sizes, "ngroups": np.array([info.n_groups for info in infos])})
    table.attrs["timing"] = timing
    _report_failed(table, np.ones(len(designs), bool), "data set")
    return table


def _group_sd(y: np.ndarray, ds: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """Each data set's response standard deviation (1 where it is 0): the y scale of its fit."""
    mean = np.bincount(ds, y, minlength=len(sizes)) / np.maximum(sizes, 1)
    return rms(np.bincount(ds, (y - mean[ds]) ** 2, minlength=len(sizes)), np.maximum(sizes, 1))


def _blank_failed(out: dict, ok: np.ndarray) -> dict:
    out = dict(out)
    for name, v in out.items():
        if name == "converged":
            out[name] = v & ok
        elif v.dtype.kind == "f":
            v = v.copy()
            v[~ok] = np.nan
            out[name] = v
    return out


def _report_failed(table: pd.DataFrame, ok: np.ndarray, what: str) -> None:
    bad = np.flatnonzero(~ok)
    failed = int((~table["converged"].to_numpy()).sum())
    if failed:
        shown = ", ".join(str(table.index[i]) for i in bad[:5])
        detail = f" ({len(bad)} could not be fitted: {shown}{', ...' if len(bad) > 5 else ''})" if len(bad) else ""
        warn(f"{failed} of {len(table)} fits did not converge{detail}; they are flagged in 'converged'",
             BatchWarning)


def _fit_responses(formula, data, responses, REML, chunk, progress, max_iter) -> pd.DataFrame:
    if not isinstance(data, pd.DataFrame):
        raise TypeError("with responses=, data must be one DataFrame")
    names = list(responses.columns) if isinstance(responses, pd.DataFrame) else None
    Y = np.asarray(responses, dtype=float)
    if Y.ndim == 1:
        Y = Y[:, None]
    if Y.ndim != 2 or Y.shape[0] != len(data):
        raise DesignError(f"responses must be an n × m array with n = {len(data)} rows (as data); got shape "
                          f"{np.shape(responses)}")
    parsed = parse_formula(formula)
    frame = data.assign(**{v: Y[:, 0] for v in parsed.response_variables if v not in data.columns})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # the template's own response does not matter
        design = build_design(formula, frame)
    info = design.info
    keep = frame[info.parsed.variables].notna().all(axis=1).to_numpy()
    if keep.sum() != info.nobs:
        raise DesignError("cannot align the responses with the rows used")
    Y = Y[keep]
    if not np.all(np.isfinite(Y)):
        raise DesignError("responses must be finite on the rows used (rows with missing predictors are dropped)")
    X, Z, codes, G = info.X, info.Z, np.asarray(info.group_codes), info.n_groups
    m = Y.shape[1]
    B0 = np.linalg.lstsq(X, Y, rcond=None)[0]              # (p, m)
    layout = theta_layout(info.terms)
    columns = design_scales(design, layout)                # X and Z scaled in the target, each response here
    y_scale = rms(np.sum((Y - Y.mean(axis=0)) ** 2, axis=0), len(Y))
    Yc = (Y - X @ B0) / y_scale
    unit_y = Scales(columns.x, columns.z, 1.0, columns.theta)
    if len(info.factors) == 1:
        data_y = (np.moveaxis(group_sums(codes, G, Z, Yc), -1, 0), (X.T @ Yc).T, np.sum(Yc * Yc, axis=0))
        target = make_target(X, Z, codes, G, layout, layout.start() / columns.theta, REML, unit_y)
    else:
        scaled = scale_design(design, unit_y)
        data_y = jax.tree_util.tree_map(np.asarray, jax.vmap(row_statistics(scaled, np.zeros(info.p)))(Yc.T))
        target = crossed_target(scaled, layout, layout.start(), REML)
    out, timing = run_given(target, data_y, m, chunk, progress, max_iter, "fit_many",
                            (G + sum(f.n_levels * f.q for f in info.factors[1:]), info.q, info.p))
    out = Scales(columns.x, columns.z, y_scale, columns.theta).unscale_batch(out, info.nobs, REML)
    table = _table(info, info.fixed_names, B0.T + out["beta"], out["se"], out,
                   {"nobs": np.full(m, info.nobs), "ngroups": np.full(m, G)})
    if names is not None:
        table.index = pd.Index(names)
    table.attrs["timing"] = timing
    _report_failed(table, np.ones(m, bool), "response")
    return table
