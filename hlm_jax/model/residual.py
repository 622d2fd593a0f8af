"""Residual structures: nlme's within-group correlation (corStruct) and variance functions (varFunc).

Group g's residuals have covariance σ²R_g with R_g = D_g C_g D_g: D_g = diag(d_i) from a
variance function (varIdent, varPower, varExp; d = 1 without one), C_g a correlation matrix
(AR(1), continuous-time AR(1), compound symmetry; I without one). A structure owns its
parameters η (unconstrained), their values on the users' scale (nlme's Phi, Rho, ratios,
power), and its action on a group's padded rows:

    whiten(T) = K_g T  with K_gᵀK_g = R_g⁻¹   (T: the rows of X, Z or y; padded rows stay 0),
    logdet    = log|R_g|.

With every group whitened, the model is an LMM with iid errors, so the profiled criterion is
lme4's on the whitened statistics plus Σ_g log|R_g| (see `hlm_jax.residual_fit`).
All per-row inputs (times, levels, covariates) arrive as (groups, rows) arrays with a mask.
"""
from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from ..design import factor_codes


class ResidualSpecError(ValueError):
    """A residual structure that does not fit the data (names the column and the problem)."""


# ---- correlation structures -------------------------------------------------------------------

@dataclass(frozen=True)
class AR1:
    """AR(1) within groups (nlme's corAR1): cor(ε_s, ε_t) = Phi^|t−s|.

    `time=None` uses the rows' order within each group (nlme's `form = ~1 | g`); a column gives
    integer times (gaps allowed). `continuous=True` is `CAR1(time)`: real times, 0 ≤ Phi < 1.
    """

    time: str | None = None
    continuous: bool = False
    gap_bits: int = 1

    @property
    def columns(self) -> tuple[str, ...]:
        return () if self.time is None else (self.time,)

    @property
    def names(self) -> tuple[str, ...]:
        return ("Phi",)

    @property
    def transforms(self) -> tuple[str, ...]:
        return ("logit",) if self.continuous else ("atanh",)

    def __str__(self) -> str:
        kind = "continuous-time AR(1)" if self.continuous else "AR(1)"
        return f"{kind} in {self.time}" if self.time else f"{kind} in row order within groups"

    def bind(self, values: dict, sizes: np.ndarray) -> "AR1":
        """With integer times, the bits the largest gap needs (phi^gap by that many squarings)."""
        if self.time is None or self.continuous:
            return self
        t = np.asarray(values[self.time], dtype=float)
        gap = int(np.max(np.abs(t)) * 2 + 1) if t.size else 1
        return AR1(self.time, False, max(gap.bit_length(), 1))

    def setup(self, values: dict, order_in_group: np.ndarray) -> np.ndarray:
        """Per-row times (the order within the group when `time` is None); checks integer times."""
        if self.time is None:
            return order_in_group.astype(float)
        t = np.asarray(values[self.time], dtype=float)
        if not self.continuous and not np.allclose(t, np.round(t)):
            raise ResidualSpecError(f"AR1 time column {self.time!r} must hold integers; "
                                    f"use CAR1({self.time!r}) for continuous times")
        return t

    def start(self) -> np.ndarray:
        return np.array([0.0])

    def natural(self, eta):
        return jax.nn.sigmoid(eta) if self.continuous else jnp.tanh(eta)

    def _lag_corr(self, eta, t, mask):
        """c_t = Phi^(t − t_prev) for each row after the first of its group (0 for the first)."""
        gap = t[:, 1:] - t[:, :-1]
        real = mask[:, 1:] > 0
        gap = jnp.where(real, gap, 1.0)
        if self.continuous:
            c = jnp.exp(gap * jax.nn.log_sigmoid(eta[0]))
        else:
            c = _integer_power(self.natural(eta)[0], gap, self.gap_bits)
        return jnp.concatenate([jnp.zeros_like(t[:, :1]), jnp.where(real, c, 0.0)], axis=1)

    def whiten(self, eta, t, T, mask):
        """e_1 = x_1, e_t = (x_t − c_t x_{t−1}) / √(1 − c_t²): the inverse Cholesky factor of C."""
        c = self._lag_corr(eta, t, mask)[..., None]
        prev = jnp.concatenate([jnp.zeros_like(T[:, :1]), T[:, :-1]], axis=1)
        return (T - c * prev) / jnp.sqrt(1.0 - c * c) * mask[..., None]

    def normalize(self, eta, t, T, mask):
        """nlme's normalized residuals' transform: `whiten` (the inverse Cholesky factor of C, rows in time order)."""
        return self.whiten(eta, t, T, mask)

    def unwhiten(self, eta, t, E, mask):
        """The inverse of `whiten`: x_t = c_t x_{t−1} + √(1 − c_t²) e_t (a scan along the rows)."""
        c = self._lag_corr(eta, t, mask)

        def step(prev, inputs):
            ct, et = inputs
            x = ct[:, None] * prev + jnp.sqrt(1.0 - ct * ct)[:, None] * et
            return x, x

        _, xs = jax.lax.scan(step, jnp.zeros_like(E[:, 0]), (c.T, jnp.moveaxis(E, 1, 0)))
        return jnp.moveaxis(xs, 0, 1) * mask[..., None]

    def logdet(self, eta, t, mask):
        c = self._lag_corr(eta, t, mask)
        return jnp.sum(mask * jnp.log1p(-c * c), axis=1)


def CAR1(time: str) -> AR1:
    """Continuous-time AR(1) (nlme's corCAR1): cor(ε_s, ε_t) = Phi^|t−s| for real times."""
    return AR1(time, continuous=True)


def _integer_power(phi, k, bits: int):
    """phi^k for integer-valued k (0 ≤ k < 2^bits), any sign of phi, by repeated squaring: a polynomial
    in phi, so every derivative is finite at phi = 0 (jnp.power's second derivative is not)."""
    if bits == 1:
        return jnp.where(k == 1.0, phi, 1.0)
    k = jnp.round(k).astype(jnp.int64)
    out, square = jnp.ones_like(k, dtype=phi.dtype), phi
    for b in range(bits):
        out = jnp.where((k >> b) & 1 == 1, out * square, out)
        square = square * square
    return out


@dataclass(frozen=True)
class CompSymm:
    """Compound symmetry within groups (nlme's corCompSymm): cor(ε_s, ε_t) = Rho for s ≠ t,
    with −1/(m−1) < Rho < 1 for the largest group size m (`max_size`, set from the data)."""

    max_size: int = 2

    @property
    def columns(self) -> tuple[str, ...]:
        return ()

    @property
    def names(self) -> tuple[str, ...]:
        return ("Rho",)

    @property
    def transforms(self) -> tuple[str, ...]:
        return ("logit((Rho + 1/(m-1)) / (1 + 1/(m-1)))",)

    def __str__(self) -> str:
        return "compound symmetry within groups"

    def bind(self, values: dict, sizes: np.ndarray) -> "CompSymm":
        return CompSymm(max(int(np.max(sizes)), 2))

    def setup(self, values: dict, order_in_group: np.ndarray) -> np.ndarray:
        return np.zeros(len(order_in_group))

    @property
    def _lower(self) -> float:
        return -1.0 / (self.max_size - 1)

    def start(self) -> np.ndarray:
        return np.array([np.log(-self._lower)])  # Rho = 0

    def natural(self, eta):
        return self._lower + (1.0 - self._lower) * jax.nn.sigmoid(eta)

    def whiten(self, eta, aux, T, mask):
        """C^(−1/2) = (I − P)/√(1 − Rho) + P/√(1 + (m − 1)Rho), P the projection on the group mean."""
        return self._scale(eta, T, mask, -0.5)

    def unwhiten(self, eta, aux, E, mask):
        return self._scale(eta, E, mask, 0.5)

    def normalize(self, eta, aux, T, mask):
        """nlme's factor F (FᵀF = C⁻¹) in the Helmert basis: e_1 = Σ_i x_i/√(m(1 + (m − 1)Rho)) and
        e_j = ((j − 1)x_j − Σ_{i<j} x_i)/√(j(j − 1)(1 − Rho)) for j ≥ 2 (rows in data order)."""
        rho = self.natural(eta)[0]
        m = jnp.sum(mask, axis=1)[:, None, None]
        j = jnp.arange(1, T.shape[1] + 1, dtype=T.dtype)[None, :, None]
        before = jnp.cumsum(T, axis=1) - T
        contrast = ((j - 1.0) * T - before) / jnp.sqrt(jnp.maximum(j * (j - 1.0), 1.0) * (1.0 - rho))
        first = jnp.sum(T, axis=1, keepdims=True) / jnp.sqrt(m * (1.0 + (m - 1.0) * rho))
        return jnp.where(j == 1.0, first, contrast) * mask[..., None]

    def _scale(self, eta, T, mask, power):
        """C^power T: the eigenvalues of C are 1 − Rho (within the group) and 1 + (m − 1)Rho (its mean)."""
        rho = self.natural(eta)[0]
        m = jnp.sum(mask, axis=1)[:, None, None]
        mean = jnp.sum(T * mask[..., None], axis=1, keepdims=True) / jnp.maximum(m, 1.0)
        return ((T - mean) * (1.0 - rho) ** power + mean * (1.0 + (m - 1.0) * rho) ** power) * mask[..., None]

    def logdet(self, eta, aux, mask):
        rho = self.natural(eta)[0]
        m = jnp.sum(mask, axis=1)
        return jnp.where(m > 0, (m - 1.0) * jnp.log1p(-rho) + jnp.log1p((m - 1.0) * rho), 0.0)


# ---- variance functions ---------------------------------------------------------------------------

@dataclass(frozen=True)
class VarIdent:
    """One residual sd per level of `by` (nlme's varIdent(form = ~1 | by)), as ratios to the first
    level (levels sorted as R's factor(); `levels` is set from the data)."""

    by: str
    levels: tuple[str, ...] = ()

    @property
    def columns(self) -> tuple[str, ...]:
        return (self.by,)

    @property
    def names(self) -> tuple[str, ...]:
        return self.levels[1:]

    @property
    def transforms(self) -> tuple[str, ...]:
        return ("log",) * len(self.names)

    def __str__(self) -> str:
        return f"one standard deviation per level of {self.by} (ratios to the first)"

    def bind(self, values: dict, sizes: np.ndarray) -> "VarIdent":
        _, labels = factor_codes(pd.Series(values[self.by]))
        if len(labels) < 2:
            raise ResidualSpecError(f"VarIdent column {self.by!r} has a single level ({labels[0]!r})")
        return VarIdent(self.by, tuple(str(v) for v in labels))

    def setup(self, values: dict) -> np.ndarray:
        codes, _ = factor_codes(pd.Series(values[self.by]))
        return codes.astype(float)

    def start(self) -> np.ndarray:
        return np.zeros(len(self.names))

    def natural(self, eta):
        return jnp.exp(eta)

    def sd(self, eta, code):
        ratios = jnp.concatenate([jnp.zeros((1,), eta.dtype), eta])
        return jnp.exp(ratios[code.astype(jnp.int32)])


@dataclass(frozen=True)
class CovariateVariance:
    """What a one-parameter variance function of one covariate shares (VarPower, VarExp)."""

    covariate: str
    transforms = ("identity",)

    @property
    def columns(self) -> tuple[str, ...]:
        return (self.covariate,)

    def bind(self, values: dict, sizes: np.ndarray) -> "CovariateVariance":
        return self

    def start(self) -> np.ndarray:
        return np.zeros(1)

    def natural(self, eta):
        return eta


@dataclass(frozen=True)
class VarPower(CovariateVariance):
    """sd ∝ |v|^power for a covariate v (nlme's varPower(form = ~v))."""

    names = ("power",)

    def __str__(self) -> str:
        return f"sd ∝ |{self.covariate}|^power"

    def setup(self, values: dict) -> np.ndarray:
        v = _numeric(values, self.covariate, "VarPower")
        if np.any(v == 0):
            raise ResidualSpecError(f"VarPower covariate {self.covariate!r} is 0 in some rows (|v|^power undefined)")
        return np.abs(v)

    def sd(self, eta, v):
        return jnp.exp(eta[0] * jnp.log(v))


@dataclass(frozen=True)
class VarExp(CovariateVariance):
    """sd ∝ exp(expon · v) for a covariate v (nlme's varExp(form = ~v))."""

    names = ("expon",)

    def __str__(self) -> str:
        return f"sd ∝ exp(expon · {self.covariate})"

    def setup(self, values: dict) -> np.ndarray:
        return _numeric(values, self.covariate, "VarExp")

    def sd(self, eta, v):
        return jnp.exp(eta[0] * v)


def _numeric(values: dict, column: str, what: str) -> np.ndarray:
    v = np.asarray(values[column])
    if not np.issubdtype(v.dtype, np.number) or v.dtype == bool:
        raise ResidualSpecError(f"{what} covariate {column!r} must be numeric, its dtype is {v.dtype}")
    return v.astype(float)


VARIANCE_FUNCTIONS = (VarIdent, VarPower, VarExp)


# ---- both together ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Residual:
    """A bound correlation structure and variance function (either may be None): R_g = D_g C_g D_g.

    η holds the correlation's parameters first, then the variance function's. The per-row inputs
    `aux` are (groups, rows, 2): the correlation's (times) and the variance function's (levels or v).
    """

    correlation: AR1 | CompSymm | None
    variance: VarIdent | VarPower | VarExp | None

    @property
    def parts(self) -> tuple:
        return tuple(s for s in (self.correlation, self.variance) if s is not None)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(n for s in self.parts for n in s.names)

    @property
    def transforms(self) -> tuple[str, ...]:
        return tuple(n for s in self.parts for n in s.transforms)

    @property
    def n_cor(self) -> int:
        return 0 if self.correlation is None else len(self.correlation.names)

    def start(self) -> np.ndarray:
        return np.concatenate([np.zeros(0)] + [s.start() for s in self.parts])

    def natural(self, eta):
        """The parameters on the users' scale (nlme's summary: Phi, Rho, sd ratios, power, expon)."""
        k = self.n_cor
        pieces = (eta[:k], eta[k:]) if self.correlation is not None else (eta,)
        return jnp.concatenate([jnp.zeros(0, eta.dtype)] + [s.natural(e) for s, e in zip(self.parts, pieces)])

    def sd(self, eta, aux, mask):
        """d_i per padded row (1 without a variance function, and in padding)."""
        if self.variance is None:
            return jnp.ones_like(mask)
        return jnp.where(mask > 0, self.variance.sd(eta[self.n_cor:], aux[..., 1]), 1.0)

    def whiten(self, eta, aux, T, mask):
        """K_g T for every group (T: groups × rows × columns): divide by d, then decorrelate."""
        T = T / self.sd(eta, aux, mask)[..., None]
        if self.correlation is None:
            return T * mask[..., None]
        return self.correlation.whiten(eta[:self.n_cor], aux[..., 0], T, mask)

    def unwhiten(self, eta, aux, E, mask):
        """K_g⁻¹ E: rows with covariance R_g from rows with covariance I (for simulation)."""
        if self.correlation is not None:
            E = self.correlation.unwhiten(eta[:self.n_cor], aux[..., 0], E, mask)
        return E * self.sd(eta, aux, mask)[..., None] * mask[..., None]

    def logdet(self, eta, aux, mask):
        """log|R_g| per group: 2 Σ log d_i + log|C_g|."""
        out = 2.0 * jnp.sum(mask * jnp.log(self.sd(eta, aux, mask)), axis=1)
        if self.correlation is not None:
            out = out + self.correlation.logdet(eta[:self.n_cor], aux[..., 0], mask)
        return out


def bind(correlation, variance, values: dict, group_codes: np.ndarray) -> tuple[Residual, np.ndarray]:
    """The structures bound to the data (levels, sizes) and the per-row inputs (rows × 2)."""
    if correlation is not None and not isinstance(correlation, (AR1, CompSymm)):
        raise ResidualSpecError(f"correlation must be AR1, CAR1 or CompSymm, got {type(correlation).__name__}")
    if variance is not None and not isinstance(variance, (VarIdent, VarPower, VarExp)):
        raise ResidualSpecError(f"weights must be VarIdent, VarPower or VarExp, got {type(variance).__name__}")
    sizes = np.bincount(group_codes)
    order = _order_in_group(group_codes)
    cor = None if correlation is None else correlation.bind(values, sizes)
    var = None if variance is None else variance.bind(values, sizes)
    aux = np.zeros((len(group_codes), 2))
    if cor is not None:
        aux[:, 0] = cor.setup(values, order)
        _check_unique_times(aux[:, 0], group_codes, cor)
    if var is not None:
        aux[:, 1] = var.setup(values)
    return Residual(cor, var), aux


def _order_in_group(codes: np.ndarray) -> np.ndarray:
    """Each row's position among its group's rows, in data order."""
    order = np.argsort(codes, kind="stable")
    sizes = np.bincount(codes)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    position = np.empty(len(codes), dtype=np.int64)
    position[order] = np.arange(len(codes)) - np.repeat(starts, sizes)
    return position


def _check_unique_times(t: np.ndarray, codes: np.ndarray, cor) -> None:
    if isinstance(cor, AR1):
        keys = np.unique(np.column_stack([codes, t]), axis=0)
        if len(keys) < len(t):
            raise ResidualSpecError(f"time column {cor.time!r} repeats a value within a group; "
                                    "AR(1) needs distinct times within each group")
