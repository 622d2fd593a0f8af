"""Batches of models with several grouping factors (crossed or nested): responses are simulated row by
row, y = Xβ + Σ_k Z_kΛ_ku_kσ + σε (lme4's simulate), and each target model's y-dependent statistics are
formed from them: the first factor's Z₁ᵀy per level, the dense part's Z₂ᵀy, Xᵀy and yᵀy, with y centred
at the target's β. One-factor targets take only the first three (then `likelihood.sums` fits them).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from ..design import Design, bucket_length
from ..fit import crossed_derivatives, crossed_objective, crossed_stats, dense_columns
from ..likelihood import crossed
from ..likelihood.lmm import simulate_responses
from ..model.layout import ThetaLayout
from ..scaling import scale_design


@jax.tree_util.register_dataclass
@dataclass(frozen=True)
class RowStatistics:
    """How one target's y-dependent statistics come from a response y (n,): in the target's units
    (y / y_scale, see `scaling`), centred at β₀."""

    y_scale: jax.Array
    X: jax.Array
    beta0: jax.Array
    Z1: jax.Array
    codes1: jax.Array
    idx2: jax.Array
    val2: jax.Array
    n_slots: int = field(metadata=dict(static=True))
    Q2: int = field(metadata=dict(static=True))

    def __call__(self, y: jax.Array) -> tuple:
        """(Z₁ᵀy_c per level, Z₂ᵀy_c, Xᵀy_c, y_cᵀy_c); without Z₂ᵀy_c for a one-factor target."""
        yc = y / self.y_scale - self.X @ self.beta0
        Zty = jnp.zeros((self.n_slots, self.Z1.shape[1]), y.dtype).at[self.codes1].add(self.Z1 * yc[:, None])
        parts = (Zty, self.X.T @ yc, yc @ yc)
        if self.Q2 == 0:
            return parts
        Z2ty = jnp.zeros(self.Q2, y.dtype).at[self.idx2].add(self.val2 * yc[:, None])
        return (Zty, Z2ty) + parts[1:]


def row_statistics(design: Design, beta0: np.ndarray, y_scale: float = 1.0) -> RowStatistics:
    """The map y → statistics of `design` (rows as the fitted data), y centred at beta0; the first
    factor's levels in as many slots as its target has (`targets.make_target`, `crossed_stats`)."""
    info = design.info
    offsets, idx, val = dense_columns(info)
    n_slots = info.n_groups if len(info.factors) == 1 else bucket_length(info.n_groups + 1)
    return RowStatistics(jnp.asarray(float(y_scale)), jnp.asarray(info.X), jnp.asarray(beta0, dtype=float),
                         jnp.asarray(info.Z),
                         jnp.asarray(info.group_codes), jnp.asarray(idx), jnp.asarray(val), n_slots,
                         int(offsets[-1]))


def scaled_row_statistics(model, beta: np.ndarray) -> RowStatistics:
    """`row_statistics` of a fitted model's design in its fit's units (`model.scales`), y centred at β."""
    scales = model.scales
    return row_statistics(scale_design(model.design, scales), beta * scales.x / scales.y, scales.y)


def crossed_estimates(theta, stats, reml):
    return crossed.estimates(theta, stats, reml)[0]


@jax.tree_util.register_dataclass
@dataclass(frozen=True)
class CrossedTarget:
    """A multi-factor model structure to fit in a batch: its statistics with the y-dependent parts
    replaced per problem, start, bounds and criterion (the blocked Cholesky of `likelihood.crossed`)."""

    template: crossed.CrossedStats
    x0: jax.Array
    lower: jax.Array
    reml: jax.Array

    objective = staticmethod(crossed_objective)
    derivatives = staticmethod(crossed_derivatives)
    estimates = staticmethod(crossed_estimates)

    def stats(self, *b) -> crossed.CrossedStats:
        """One problem's statistics from its y-dependent parts (Z₁ᵀy, Z₂ᵀy, Xᵀy, yᵀy), or given whole
        (one `CrossedStats`) when every problem has its own design."""
        if len(b) == 1:
            return b[0]
        Zty, Z2ty, Xty, yty = b
        first = dataclasses.replace(self.template.first, Zty=Zty, Xty=Xty, yty=yty)
        return dataclasses.replace(self.template, first=first, Z2ty=Z2ty)


def crossed_target(design: Design, layout: ThetaLayout, x0, reml) -> CrossedTarget:
    stats, _ = crossed_stats(design)
    return CrossedTarget(jax.tree_util.tree_map(jnp.asarray, stats), jnp.asarray(x0, dtype=float),
                         jnp.asarray(layout.lower, dtype=float), jnp.asarray(float(reml)))


def scaled_crossed_target(model, theta, reml) -> CrossedTarget:
    """`crossed_target` of a fitted model's design in its fit's units, from θ in the data's units."""
    return crossed_target(scale_design(model.design, model.scales), model.layout, theta * model.scales.theta, reml)


@jax.tree_util.register_dataclass
@dataclass(frozen=True)
class RowSimulator:
    """Draws responses of a fitted model (any number of grouping factors) and each target's statistics."""

    mean: jax.Array
    sigma: jax.Array
    Z: tuple
    codes: tuple
    lams: tuple
    targets: tuple
    levels: tuple = field(metadata=dict(static=True))

    def draw(self, key) -> jax.Array:
        return simulate_responses(key, self.mean, self.Z, self.codes, self.lams, self.sigma, self.levels, 1)[0]

    def statistics(self, y, t: int) -> tuple:
        return self.targets[t](y)


def row_simulator(model, targets: list[RowStatistics]) -> RowSimulator:
    """A simulator of `model` (a fitted LmerModel) feeding `targets`."""
    info = model.info
    factors = info.factors
    return RowSimulator(jnp.asarray(info.X @ model.fixef.to_numpy()), jnp.asarray(model.sigma),
                        tuple(jnp.asarray(f.Z) for f in factors), tuple(jnp.asarray(f.codes) for f in factors),
                        tuple(jnp.asarray(lam) for lam in model.lambda_blocks), tuple(targets),
                        tuple(f.n_levels for f in factors))


@dataclass
class RowSource:
    """Rebuilds replicate responses of a `RowSimulator` (the very ys the batch fitted)."""

    simulator: RowSimulator
    row_index: pd.Index

    def responses(self, seed: int, which: np.ndarray) -> np.ndarray:
        with jax.enable_x64(True):
            keys = jax.vmap(jax.random.fold_in, (None, 0))(jax.random.PRNGKey(seed), jnp.asarray(which))
            return np.asarray(jax.vmap(self.simulator.draw)(keys))
