"""Bootstrap and fit_many for models with a residual structure (`residual_fit`): each replicate is a
full refit of the whitened criterion (its statistics depend on η, so the sufficient-statistic
shortcut of the plain bootstrap does not apply), vmapped over replicates laid out over the devices."""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..messages import warn
from ..precision import float64
from ..residual_fit import fit_responses, replicate_table, simulate
from ..results import lmer
from .results import BatchWarning, BootstrapResult


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
def residual_bootstrap(model, n: int, seed: int, chunk: int | None, max_iter: int) -> BootstrapResult:
    """Parametric bootstrap of a fit with a residual structure: simulate (b, and ε with covariance σ²R_g),
    refit each replicate (REML or ML as the model)."""
    t0 = time.perf_counter()
    Y = simulate(model, n, seed)
    out = fit_responses(model, Y, max_iter=max_iter, chunk=chunk)
    table = replicate_table(model, out)
    keep = [c for c in table.columns if not c.startswith("se_") and c not in ("objective", "converged", "iterations")]
    replicates = table[keep]
    replicates.index.name = "replicate"
    result = BootstrapResult(replicates, out["x"][:, :len(model.theta)], out["converged"], out["objective"],
                             out["iterations"], int(seed), dict(seconds=time.perf_counter() - t0),
                             ResidualSimulation(model, n))
    if result.n_failed:
        warn(f"{result.n_failed} of {n} bootstrap replicates did not converge; they are flagged in "
             "`converged` and left out of confint()", BatchWarning)
    return result


@float64
def residual_fit_many(formula: str, data, responses, REML: bool, correlation, weights, max_iter: int) -> pd.DataFrame:
    """fit_many with a residual structure: one design, the columns of `responses` (n × m) as responses."""
    if responses is None or not isinstance(data, pd.DataFrame):
        raise NotImplementedError("fit_many with a residual structure takes one DataFrame and responses= "
                                  "(an n × m array); for several data sets, call lmer on each")
    names = list(responses.columns) if isinstance(responses, pd.DataFrame) else None
    Y = np.asarray(responses, dtype=float)
    Y = Y[:, None] if Y.ndim == 1 else Y
    template = lmer(formula, data, REML=REML, correlation=correlation, weights=weights)
    keep = data.index.get_indexer(template.info.row_index)
    table = replicate_table(template, fit_responses(template, Y[keep].T, max_iter=max_iter))
    if names is not None:
        table.index = pd.Index(names)
    return table
