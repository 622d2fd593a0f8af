"""Many GLMM fits in one compiled program: parametric bootstrap, bootstrap LRT and fits to many responses.

Every refit is the same Laplace problem with another response vector, so the problems differ only in
y: the slot queue of `optimize.minimize_queue` steps a fixed number of them at a time with exact
derivatives (through the conditional modes) and refills finished slots. The problems go chunk by chunk
through the shared driver `batch.program.run_chunks`, each chunk laid out over the devices (a one-axis
mesh), as the LMM batches are. Batched refits use the Laplace approximation (nAGQ = 1) only: a model
fitted with nAGQ > 1 is refused.
"""
from __future__ import annotations

import dataclasses
import time
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
from jax.sharding import NamedSharding, PartitionSpec
from scipy import stats as sps

from .batch import BatchWarning, BootstrapResult, PBTest
from .batch.devices import chunk_size, mesh, on_cpu, slot_width
from .batch.program import bytes_per_problem, run_chunks
from .design import DesignError
from .glmm import Problem, derivatives, laplace_deviance, make_problem
from .messages import warn
from .optimize import batch_converged, minimize_queue
from .precision import float64

CPU_WIDTH = 1024


def _with_response(problem: Problem, y) -> tuple[Problem]:
    return (dataclasses.replace(problem, rows=dataclasses.replace(problem.rows, y=y)),)


def glmm_width() -> int:
    """Slots stepping together per device: the LMMs' on accelerators; wider on a CPU, where these small
    problems' steps cost mostly per-operation overhead (cbpp: 1,000 refits 0.82 s at 1,024 slots, 1.10 s
    at 256)."""
    return CPU_WIDTH if on_cpu() else slot_width()


def _derivs(x, problem):
    return derivatives(x, problem)[:3]


def _refit_chunk(problem: Problem, ys, valid, x0, lower, max_iter, width: int):
    """Minimise the Laplace deviance for every response of one chunk (leading axis sharded over the
    devices; each device runs its own slot queue over its share, valid problems first)."""

    def local(problem, ys, valid, x0, lower, max_iter):
        return minimize_queue(laplace_deviance, _derivs, x0, lower, ys, partial(_with_response, problem),
                              jnp.sum(valid), width, max_iter=max_iter)

    rep, spec = PartitionSpec(), PartitionSpec("batch")
    return jax.shard_map(local, mesh=mesh(), in_specs=(rep, spec, spec, rep, rep, rep), out_specs=spec,
                         check_vma=False)(problem, ys, valid, x0, lower, max_iter)


refit_chunk = jax.jit(_refit_chunk, static_argnames=("width",))


def fit_responses(model, ys: np.ndarray, max_iter: int = 100, chunk: int | None = None,
                  progress: bool | None = None) -> dict:
    """Refit `model` to each row of ys (proportions, rows in the fit's order), batched; numpy results."""
    gd = model.gd
    if model.nAGQ != 1:
        raise DesignError(f"batched GLMM refits use the Laplace approximation (nAGQ = 1); this model was fitted "
                          f"with nAGQ = {model.nAGQ}: refit it with nAGQ = 1 first")
    problem = make_problem(gd)
    lower = np.concatenate([model.layout.lower, np.full(len(model._x) - model.layout.size, -np.inf)])
    ys = np.asarray(ys, float)
    n = len(ys)
    per_dev = chunk_size(n, bytes_per_problem(model.nobs, 1, len(model._x)), chunk)
    sharding = NamedSharding(mesh(), PartitionSpec("batch"))
    x0, low, iters = jnp.asarray(model._x), jnp.asarray(lower), jnp.asarray(max_iter, jnp.int32)

    def fit_chunk(idx, real):
        take = np.minimum(idx, n - 1)
        state = refit_chunk(problem, jax.device_put(ys[take], sharding), jax.device_put(real, sharding), x0, low,
                            iters, width=glmm_width())
        return dict(x=state.x, objective=state.f, converged=batch_converged(state), iterations=state.iterations)

    out, timing = run_chunks(n, per_dev, progress, "GLMM refits", fit_chunk)
    return out | {"timing": timing}


def _table(model, x: np.ndarray) -> pd.DataFrame:
    """Replicates as lme4's bootMer(FUN = c(fixef, theta)) columns: fixed effects, then θ by name."""
    n_theta = model.layout.size
    p = model.info.p
    cols = list(model.fixef.index) + list(model.theta_names)
    table = pd.DataFrame(np.column_stack([x[:, n_theta:n_theta + p], x[:, :n_theta]]), columns=cols)
    table.index.name = "replicate"
    return table


@float64
def bootstrap_glmm(model, n: int = 1000, seed: int = 0, max_iter: int = 100, chunk: int | None = None,
                   progress: bool | None = None) -> BootstrapResult:
    """Parametric bootstrap of a GLMM (lme4's bootMer): n responses simulated from the fit, each refitted
    by the Laplace approximation in batched programs (chunk by chunk). Replicates: fixed effects and θ."""
    t0 = time.perf_counter()
    ys = np.asarray(model.simulate_array(n, seed))
    t1 = time.perf_counter()
    out = fit_responses(model, ys, max_iter, chunk, progress)
    result = BootstrapResult(_table(model, out["x"]), out["x"][:, :model.layout.size], out["converged"],
                             out["objective"], out["iterations"], int(seed),
                             {"simulate_seconds": t1 - t0} | out["timing"])
    if result.n_failed:
        warn(f"{result.n_failed} of {n} bootstrap refits did not converge; they are flagged in "
             "`converged` and left out of confint()", BatchWarning)
    return result


@float64
def pb_test_glmm(small, big, n: int = 1000, seed: int = 0, max_iter: int = 100) -> PBTest:
    """Parametric bootstrap likelihood-ratio test of nested GLMMs (pbkrtest's PBmodcomp): responses
    simulated from the small model, both models refitted to each."""
    if small.nobs != big.nobs or not np.array_equal(small.gd.y, big.gd.y):
        raise DesignError("pb_test needs both models fitted to the same data and response")
    df = big.n_params - small.n_params
    if df <= 0:
        raise DesignError(f"the small model has {small.n_params} parameters and the big one {big.n_params}; "
                          "pass the models as pb_test(small, big)")
    stat = max(small.objective - big.objective, 0.0)
    ys = np.asarray(small.simulate_array(n, seed))
    out_s, out_b = fit_responses(small, ys, max_iter), fit_responses(big, ys, max_iter)
    ref = np.maximum(out_s["objective"] - out_b["objective"], 0.0)
    converged = out_s["converged"] & out_b["converged"]
    used = ref[converged]
    positive = used[used > 0]
    p_boot = (1 + np.sum(positive > stat)) / (1 + positive.size)   # pbkrtest's rule, as the LMM test
    n_failed = int(np.sum(~converged))
    if n_failed:
        warn(f"{n_failed} of {n} bootstrap refits did not converge and were left out", BatchWarning)
    return PBTest(float(stat), int(df), float(sps.chi2.sf(stat, df)), float(p_boot), ref, converged, n_failed)


@float64
def fit_many_glmm(model, responses, max_iter: int = 100) -> pd.DataFrame:
    """The model refitted to each column of `responses` (n rows × m responses, as the fit's rows; binomial:
    proportions of the fit's trials): one row per response with fixed effects, θ, logLik, converged."""
    ys = np.asarray(responses, float)
    if ys.ndim != 2 or ys.shape[0] != model.nobs:
        raise DesignError(f"responses must be a matrix with {model.nobs} rows (one per row of the fit)")
    for j in range(ys.shape[1]):
        model.family.check(ys[:, j], model.gd.w, model.info.row_index)
    out = fit_responses(model, ys.T, max_iter)
    table = _table(model, out["x"])
    table["logLik"] = -0.5 * out["objective"]
    table["converged"] = out["converged"]
    return table
