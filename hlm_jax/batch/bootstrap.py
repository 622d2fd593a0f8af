"""The parametric bootstrap (lme4's bootMer) of a fitted model, in batched programs."""
from __future__ import annotations

import time

import numpy as np
import pandas as pd

from ..messages import warn
from ..precision import float64
from ..scaling import unit_scales
from .program import run_simulated
from .residual import residual_bootstrap
from .results import BatchWarning, BootstrapResult
from .simulate import make_simulator
from .rows import RowSource, row_simulator, scaled_crossed_target, scaled_row_statistics
from .targets import make_target


def batch_dims(*models) -> tuple[int, int, int]:
    """(statistics' rows, columns per row, p) of the largest model: what one queued problem holds."""
    rows = max(m.info.n_groups + sum(f.n_levels * f.q for f in m.info.factors[1:]) for m in models)
    return rows, max(m.info.q for m in models), max(m.info.p for m in models)


def model_arrays(model):
    info = model.info
    return info.X, info.Z, np.asarray(info.group_codes), info.n_groups


@float64
def bootstrap(model, n: int = 1000, seed: int = 0, chunk: int | None = None, progress: bool | None = None,
              max_iter: int = 200) -> BootstrapResult:
    """Parametric bootstrap (lme4's bootMer, type "parametric", use.u = FALSE): simulate n responses
    from the fitted model, refit each (REML or ML as the model): the replicates' statistics drawn in one
    batched program, the refits in another (the one `fit_many` runs for the same model structure).

    Returns a `BootstrapResult`; `result.confint(level)` gives percentile intervals. Deterministic for
    a seed, whatever the chunk size or number of devices. `chunk` overrides the problems per chunk
    (default: from free memory); `progress` forces the progress bar on or off (default: on for runs
    of several chunks that take over a second). A GLMM (hj.glmer) runs its own batched refits.
    """
    if getattr(model, "family", None) is not None:
        return model.bootstrap(n=n, seed=seed, max_iter=max_iter)
    n = check_n(n)
    model.require_unweighted("bootstrap")
    if getattr(model, "residual", None) is not None:
        return residual_bootstrap(model, n, seed, chunk, max_iter, progress)
    info = model.info
    beta = model.fixef.to_numpy()
    t0 = time.perf_counter()
    if len(info.factors) == 1:
        # simulated and refitted in the fit's scaled units (see `scaling`): a seed gives the same replicates
        # in any units
        X, Z, codes, G = model_arrays(model)
        sc = model.scales
        X, Z, beta_s = X / sc.x, Z / sc.z[0], beta * sc.x / sc.y
        simulator, source, _ = make_simulator(X @ beta_s, Z, sc.z[0][:, None] * model.lambda_matrix,
                                              model.sigma / sc.y, codes, G, [(X, Z, beta_s)], info.row_index,
                                              y_scale=sc.y)
        target = make_target(X, Z, codes, G, model.layout, model.theta * sc.theta, model.reml,
                             unit_scales(info, model.layout))
    else:
        simulator = row_simulator(model, [scaled_row_statistics(model, beta)])
        source = RowSource(simulator, info.row_index)
        target = scaled_crossed_target(model, model.theta, model.reml)
    setup = time.perf_counter() - t0
    (out,), timing = run_simulated(simulator, (target,), n, seed, chunk, progress, max_iter, "bootstrap",
                                   batch_dims(model))
    out = model.scales.unscale_batch(out, info.nobs, model.reml)
    timing["setup_seconds"] = setup
    fixef = beta[None, :] + out["beta"]
    table = np.column_stack([fixef, out["sigma"], model.layout.sd_cor(out["theta"], out["sigma"])])
    columns = list(model.fixef.index) + ["sigma"] + list(model.varcorr_names())
    replicates = pd.DataFrame(table, columns=columns)
    replicates.index.name = "replicate"
    result = BootstrapResult(replicates, out["theta"], out["converged"], out["objective"], out["iterations"],
                             int(seed), timing, source)
    if result.n_failed:
        warn(f"{result.n_failed} of {n} bootstrap replicates did not converge; they are flagged in "
             "`converged` and left out of confint()", BatchWarning)
    return result


def check_n(n) -> int:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    return int(n)
