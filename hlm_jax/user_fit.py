"""Fitting user-written per-group models (`model.user.GroupModel`): the optimiser, SEs, bootstrap, batches.

The data are padded per group (as lmer's designs: rows to lengths 2^k or 1.5·2^k, buckets by
length); the objective is −2 log L over the unconstrained parameter vector, minimised by the
shared projected-Newton optimiser with exact autodiff gradients and Hessians (not optax: its
first-order methods need many more steps here and no Hessian comes with them). Batches (bootstrap,
`fit_many`) refit on the shared slot queue (`batch.program.run_given`, a `UserTarget`): chunks laid out
over every device, and a refit that needs many steps holds only its own slot.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from .design import DesignError, factor_codes, padded_length
from .model.user import GroupModel, Packing
from .batch.program import run_given
from .optimize import OptSummary, gradient_and_hessian, minimize, summarize
from .precision import float64
from .report import with_timing


def pad_groups(frame: pd.DataFrame, codes: np.ndarray, columns: list[str]) -> tuple[tuple, tuple]:
    """Per bucket of groups padded to one length: a dict of (groups, rows) arrays (the columns and
    "mask"), and the data row of each cell (0 in padding)."""
    n_groups = int(codes.max()) + 1
    sizes = np.bincount(codes, minlength=n_groups)
    lengths = np.array([padded_length(s) for s in sizes])
    order = np.argsort(codes, kind="stable")
    starts = np.concatenate([[0], np.cumsum(sizes)])
    values = {c: frame[c].to_numpy(dtype=float) for c in columns}
    buckets, rows = [], []
    for length in np.unique(lengths):
        groups = np.flatnonzero(lengths == length)
        idx = np.zeros((len(groups), length), dtype=np.int64)
        mask = np.zeros((len(groups), length))
        for slot, g in enumerate(groups):
            mine = order[starts[g]:starts[g + 1]]
            idx[slot, :len(mine)] = mine
            mask[slot, :len(mine)] = 1.0
        bucket = {c: v[idx] * mask for c, v in values.items()}
        bucket["mask"] = mask
        buckets.append(bucket)
        rows.append(idx)
    return tuple(buckets), tuple(rows)


def objective(x, model: GroupModel, packing: Packing, buckets, fixed) -> jax.Array:
    """−2 log L at the unconstrained vector x."""
    return -2.0 * model.total_loglik(packing.to_params(x, fixed), buckets)


@partial(jax.jit, static_argnames=("model", "packing", "max_iter"))
def _fit(x0, buckets, fixed, model: GroupModel, packing: Packing, max_iter: int = 200):
    lower = jnp.full_like(x0, -jnp.inf)
    return minimize(objective, x0, lower, (model, packing, buckets, fixed), max_iter=max_iter)


@partial(jax.jit, static_argnames=("model", "packing"))
def _hessian(x, buckets, fixed, model: GroupModel, packing: Packing):
    return jax.hessian(objective)(x, model, packing, buckets, fixed)


@dataclass
class GroupModelFit:
    """A fitted user-written model: `params` (users' scale), `table` (estimate, std_error, scale),
    `loglik`, `opt` (the optimiser's record), `timing` (the fit's seconds, compile_s of them compiling, run_s);
    `bootstrap` and `fit_many` refit in batches."""

    model: GroupModel
    packing: Packing
    x: np.ndarray
    fixed: dict
    loglik: float
    opt: OptSummary
    table: pd.DataFrame
    buckets: tuple = field(repr=False)
    rows: tuple = field(repr=False)
    nobs: int = 0
    timing: dict = field(default_factory=dict)

    @property
    def params(self) -> dict:
        with jax.enable_x64(True):
            return {k: np.asarray(v) for k, v in self.packing.to_params(jnp.asarray(self.x), self.fixed).items()}

    @property
    def converged(self) -> bool:
        return self.opt.converged

    def simulate(self, nsim: int = 1, seed: int = 0) -> np.ndarray:
        """nsim responses (nsim × n, rows as the data) drawn from the fitted model with the model's simulator."""
        return _simulate(self, nsim, seed)

    def fit_many(self, responses) -> pd.DataFrame:
        """Refit to each column of `responses` (n × m, rows as the data), in one batched program."""
        return _fit_many(self, np.asarray(responses, dtype=float))

    def bootstrap(self, n: int = 200, seed: int = 0) -> pd.DataFrame:
        """Parametric bootstrap: n responses simulated from the fit, each refitted (one row per replicate)."""
        return self.fit_many(self.simulate(n, seed).T)


def _group_codes(data: pd.DataFrame, group: str) -> np.ndarray:
    if group not in data.columns:
        raise DesignError(f"group column {group!r} is not in the data")
    return factor_codes(data[group])[0]


@with_timing
@float64
def fit_group(model: GroupModel, data: pd.DataFrame, group: str, start: dict, fixed: dict | None = None,
              columns=None, max_iter: int = 200) -> GroupModelFit:
    """Fit a `GroupModel` to `data` grouped by `group`, from `start` (users' scale); parameters in `fixed`
    stay at their values. `columns` (default: every numeric column but `group`) are padded per group."""
    if not isinstance(model, GroupModel):
        raise TypeError(f"model must be a GroupModel, got {type(model).__name__}")
    fixed = {k: jnp.asarray(v, dtype=float) for k, v in (fixed or {}).items()}
    free = {k: np.asarray(v, dtype=float) for k, v in start.items() if k not in fixed}
    packing = Packing(tuple(free), tuple(v.shape for v in free.values()), tuple(model.kind(k) for k in free))
    if columns is None:
        columns = [c for c in data.columns if c != group and pd.api.types.is_numeric_dtype(data[c])]
    missing = data[list(columns)].isna().any(axis=1).to_numpy()
    if missing.any():
        raise DesignError(f"{int(missing.sum())} row(s) have missing values in {', '.join(columns)}; drop them first")
    buckets, rows = pad_groups(data, _group_codes(data, group), list(columns))
    buckets = jax.tree_util.tree_map(jnp.asarray, buckets)
    state = _fit(jnp.asarray(packing.to_vector(free)), buckets, fixed, model, packing, max_iter=max_iter)
    x = np.asarray(state.x)
    H = np.asarray(_hessian(jnp.asarray(x), buckets, fixed, model, packing))
    return GroupModelFit(model, packing, x, fixed, -0.5 * float(state.f), summarize(state),
                         _table(packing, x, H, fixed), buckets, rows, len(data))


def _table(packing: Packing, x: np.ndarray, H: np.ndarray, fixed: dict) -> pd.DataFrame:
    """Estimates and SEs on the users' scale: cov(x̂) = 2H⁻¹, then the delta method through each transform."""
    with np.errstate(invalid="ignore"):
        se_x = np.sqrt(np.diag(2.0 * np.linalg.inv(H))) if len(x) else np.zeros(0)

    def flat(v):
        return jnp.concatenate([jnp.ravel(p) for k, p in packing.to_params(v, {}).items()])

    value = np.asarray(flat(jnp.asarray(x)))
    slope = np.asarray(jax.jvp(flat, (jnp.asarray(x),), (jnp.ones_like(jnp.asarray(x)),))[1])
    return pd.DataFrame({"estimate": value, "std_error": np.abs(slope) * se_x, "scale": packing.scales()},
                        index=pd.Index(packing.labels(), name="parameter"))


@float64
def _simulate(fit: GroupModelFit, nsim: int, seed: int) -> np.ndarray:
    model = fit.model
    if model.simulate is None:
        raise ValueError("this GroupModel has no simulator (pass simulate= to GroupModel)")
    params = fit.packing.to_params(jnp.asarray(fit.x), fit.fixed)
    key = jax.random.PRNGKey(seed)
    out = np.zeros((nsim, fit.nobs))
    for k, (bucket, rows) in enumerate(zip(fit.buckets, fit.rows)):
        keys = jax.random.split(jax.random.fold_in(key, k), nsim * rows.shape[0] * 2).reshape(nsim, rows.shape[0], 2, -1)
        ys = jax.vmap(jax.vmap(partial(_draw_group, model, params), (0, 0)), (0, None))(keys, bucket)
        mask = np.asarray(bucket["mask"]) > 0
        out[:, rows[mask]] = np.asarray(ys)[:, mask]
    return out


def _draw_group(model: GroupModel, params, keys, group):
    """One group's response: b = Λz (z standard normal; none without random effects), then the model's draw."""
    b = None
    if model.random is not None:
        lam = model.lam(params)
        b = lam @ jax.random.normal(keys[0], (lam.shape[0],), dtype=lam.dtype)
    return model.simulate(keys[1], params, group, b)


class Unprofiled(NamedTuple):
    """What a batch target's `estimates` gives (`batch.targets.fit_target`) for a model that profiles no
    parameters out: no fixed effects, no σ."""

    beta: jax.Array
    sigma: jax.Array
    vcov_beta: jax.Array


@jax.tree_util.register_dataclass
@dataclass(frozen=True)
class UserTarget:
    """A fitted user-written model as a batch target (`program.run_given`): its padded columns with the
    response replaced per problem, refitted from the fit's x on the shared slot queue."""

    buckets: tuple
    fixed: dict
    x0: jax.Array
    lower: jax.Array
    reml: jax.Array
    model: GroupModel = field(metadata=dict(static=True))
    packing: Packing = field(metadata=dict(static=True))

    def objective(self, x, buckets, reml):
        return objective(x, self.model, self.packing, buckets, self.fixed)

    def derivatives(self, x, buckets, reml):
        g, H = gradient_and_hessian(objective, x, (self.model, self.packing, buckets, self.fixed))
        return self.objective(x, buckets, reml), g, H

    def stats(self, *ys):
        """One problem's buckets: the fit's columns with its responses (one padded array per bucket)."""
        return tuple({**b, self.model.response: y} for b, y in zip(self.buckets, ys))

    def estimates(self, x, buckets, reml):
        return Unprofiled(jnp.zeros(0, x.dtype), jnp.zeros((), x.dtype), jnp.zeros((0, 0), x.dtype))


@float64
def _fit_many(fit: GroupModelFit, Y: np.ndarray) -> pd.DataFrame:
    if Y.ndim == 1:
        Y = Y[:, None]
    if Y.shape[0] != fit.nobs:
        raise DesignError(f"responses need {fit.nobs} rows (as the data), got {Y.shape[0]}")
    m = Y.shape[1]
    ys = tuple(np.moveaxis(Y[rows] * np.asarray(b["mask"])[..., None], -1, 0) for b, rows in zip(fit.buckets, fit.rows))
    x0 = jnp.asarray(fit.x)
    target = UserTarget(fit.buckets, fit.fixed, x0, jnp.full_like(x0, -jnp.inf), jnp.zeros(()), fit.model, fit.packing)
    cells = sum(int(np.prod(y.shape[1:])) for y in ys)
    out, _ = run_given(target, ys, m, None, None, 200, "fit_many", (cells, 1, 0))
    x = out["theta"]
    with jax.enable_x64(True):
        values = np.stack([np.concatenate([np.ravel(v) for v in fit.packing.to_params(jnp.asarray(xi), {}).values()])
                           for xi in x]) if len(fit.x) else np.zeros((m, 0))
    table = pd.DataFrame(values, columns=fit.packing.labels())
    table["loglik"] = -0.5 * out["objective"]
    table["converged"] = out["converged"]
    return table
