"""Bootstrap and fit_many for models with a residual structure (`residual_fit`): each replicate is a
full refit of the whitened criterion (its statistics depend on η, so the sufficient-statistic
shortcut of the plain bootstrap does not apply), on the shared slot queue (`optimize.minimize_queue`
through `program.run_given`): a replicate that needs many steps holds only its own slot. The program is
always the throughput-compiled one: a residual criterion's step is heavy enough that the fast-compiling
variant runs 2-3× slower, more than its compile saves."""
from __future__ import annotations

import time
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from ..messages import warn
from ..model.layout import theta_layout
from ..optimize import gradient_and_hessian
from ..precision import float64
from ..residual_fit import StackedStats, estimates, objective, prepare, response_column, simulate, with_column
from ..results import lmer
from .devices import slot_width
from .program import run_given
from .results import BatchWarning, BootstrapResult

# Memory the queue's slots may hold together: each slot keeps its whitened statistics (groups × k × k,
# k = p + q + 1) and their derivatives' intermediates (about WORK_COPIES of them).
SLOT_BYTES, WORK_COPIES = 2 ** 30, 16


@jax.tree_util.register_dataclass
@dataclass(frozen=True)
class ResidualTarget:
    """A fit with a residual structure as a batch target (`batch.targets.fit_target`): the model's prepared
    statistics (`residual_fit.prepare`), refitted to other responses from the fit's (θ̂, η̂)."""

    base: object
    x0: jax.Array
    lower: jax.Array
    reml: jax.Array

    objective = staticmethod(objective)

    @staticmethod
    def derivatives(x, data, reml):
        g, H = gradient_and_hessian(objective, x, (data, reml))
        return objective(x, data, reml), g, H

    def stats(self, *problem):
        """One problem's statistics from its `responses` and β₀."""
        if isinstance(self.base, StackedStats):
            return with_column(self.base, *problem)
        return self.base.with_response(problem[:-1], problem[-1])

    def responses(self, ys: tuple, beta0s, block: int = 256) -> tuple:
        """What a problem holds, for each row of the padded responses `ys` (m × groups × rows per bucket):
        the stacked statistics' y column (formed once, not at every step), else the padded responses."""
        if not isinstance(self.base, StackedStats):
            return ys
        m = len(beta0s)
        return (np.concatenate([np.asarray(_response_columns(self.base, tuple(y[i:i + block] for y in ys), beta0s[i:i + block]))
                                for i in range(0, m, block)]),)

    @staticmethod
    def estimates(x, data, reml):
        """The estimates with β̂ in the data's units (not relative to β₀)."""
        est = estimates(x, data, reml)
        return est._replace(beta=est.beta + data.beta0)


_response_columns = jax.jit(jax.vmap(response_column, (None, 0, 0)))  # one compiled program for every call


def residual_target(model) -> ResidualTarget:
    data = model.residual.data
    lower = np.concatenate([theta_layout(model.info.terms).lower, np.full(len(model.residual.eta), -np.inf)])
    with jax.enable_x64(True):
        base = jax.jit(prepare)(data)
    return ResidualTarget(base, jnp.asarray(np.concatenate([model.theta, model.residual.eta])), jnp.asarray(lower),
                          jnp.asarray(float(model.reml)))


def queue_width(model) -> int:
    """Slots of the queue: the platform's width, fewer where each slot's statistics are large."""
    b = model.residual.data.buckets[0]
    k = b.X.shape[-1] + b.Z.shape[-1] + 1
    per_slot = 8 * model.residual.data.n_slots * k * k * WORK_COPIES
    return max(1, min(slot_width(), 1 << (max(SLOT_BYTES // per_slot, 1).bit_length() - 1)))


@float64
def fit_responses(model, Y: np.ndarray, max_iter: int = 200, chunk: int | None = None,
                  progress: bool | None = None, desc: str = "fit_many") -> tuple[dict, dict]:
    """Refit a model with a residual structure to each row of Y (m × n), chunk by chunk over the devices;
    per-problem results (x = (θ, η), beta, se, sigma, objective, converged, iterations) and timings."""
    data = model.residual.data
    beta0s = np.linalg.lstsq(model.info.X, Y.T, rcond=None)[0].T
    target = residual_target(model)
    ys = tuple(Y[:, np.asarray(b.rows)] * np.asarray(b.mask) for b in data.buckets)
    problems = target.responses(ys, beta0s) + (beta0s,)
    cells = sum(int(np.prod(v.shape[1:])) for v in problems)
    out, timing = run_given(target, problems, len(Y), chunk, progress, max_iter, desc, (cells, 1, 0),
                            width=queue_width(model), latency=False)
    out["x"] = out.pop("theta")
    return out, timing


def replicate_table(model, out: dict) -> pd.DataFrame:
    """One row per refit: fixed effects, se_<name>, σ, the sds and correlations, the residual structure's
    parameters (users' scale), objective, converged, iterations."""
    k = len(model.theta)
    theta, eta = out["x"][:, :k], out["x"][:, k:]
    columns = {name: out["beta"][:, j] for j, name in enumerate(model.fixef.index)}
    columns.update({f"se_{name}": out["se"][:, j] for j, name in enumerate(model.fixef.index)})
    columns["sigma"] = out["sigma"]
    layout = theta_layout(model.info.terms)
    vc = layout.sd_cor(theta, out["sigma"])
    columns.update({name: vc[:, j] for j, name in enumerate(layout.varcorr_names())})
    residual = model.residual.residual
    with jax.enable_x64(True):
        natural = np.asarray(jax.vmap(residual.natural)(jnp.asarray(eta)))
    columns.update({name: natural[:, j] for j, name in enumerate(residual.names)})
    columns.update(objective=out["objective"], converged=out["converged"], iterations=out["iterations"])
    return pd.DataFrame(columns)


@dataclass(frozen=True)
class ResidualSimulation:
    """Replays a bootstrap's draws: `responses(seed, which)` gives the replicates' simulated y."""

    model: object
    n: int

    @property
    def row_index(self) -> pd.Index:
        return self.model.info.row_index

    def responses(self, seed: int, which: np.ndarray) -> np.ndarray:
        return simulate(self.model, self.n, seed)[which]


@float64
def residual_bootstrap(model, n: int, seed: int, chunk: int | None, max_iter: int,
                       progress: bool | None = None) -> BootstrapResult:
    """Parametric bootstrap of a fit with a residual structure: simulate (b, and ε with covariance σ²R_g),
    refit each replicate (REML or ML as the model)."""
    t0 = time.perf_counter()
    Y = simulate(model, n, seed)
    setup = time.perf_counter() - t0
    out, timing = fit_responses(model, Y, max_iter=max_iter, chunk=chunk, progress=progress, desc="bootstrap")
    timing["setup_seconds"] = setup
    table = replicate_table(model, out)
    keep = [c for c in table.columns if not c.startswith("se_") and c not in ("objective", "converged", "iterations")]
    replicates = table[keep]
    replicates.index.name = "replicate"
    result = BootstrapResult(replicates, out["x"][:, :len(model.theta)], out["converged"], out["objective"],
                             out["iterations"], int(seed), timing, ResidualSimulation(model, n))
    if result.n_failed:
        warn(f"{result.n_failed} of {n} bootstrap replicates did not converge; they are flagged in "
             "`converged` and left out of confint()", BatchWarning)
    return result


@float64
def residual_fit_many(formula: str, data, responses, REML: bool, correlation, weights, max_iter: int,
                      chunk: int | None = None, progress: bool | None = None) -> pd.DataFrame:
    """fit_many with a residual structure: one design, the columns of `responses` (n × m) as responses."""
    if responses is None or not isinstance(data, pd.DataFrame):
        raise NotImplementedError("fit_many with a residual structure takes one DataFrame and responses= "
                                  "(an n × m array); for several data sets, call lmer on each")
    names = list(responses.columns) if isinstance(responses, pd.DataFrame) else None
    Y = np.asarray(responses, dtype=float)
    Y = Y[:, None] if Y.ndim == 1 else Y
    template = lmer(formula, data, REML=REML, correlation=correlation, weights=weights)
    keep = data.index.get_indexer(template.info.row_index)
    out, timing = fit_responses(template, Y[keep].T, max_iter=max_iter, chunk=chunk, progress=progress)
    table = replicate_table(template, out)
    table.attrs["timing"] = timing
    if names is not None:
        table.index = pd.Index(names)
    return table
