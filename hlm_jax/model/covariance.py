"""Covariance structures of random-effects terms: θ's layout, bounds, Λ(θ), names and sd/cor rows.

A term's random effects are b = Λ(θ)u with u ~ N(0, σ²I), so cov(b) = σ²ΛΛᵀ. A structure owns
its slice of θ: how many elements, their lower bounds and start, how they make the q × q
factor Λ, what they are called, and which standard deviations and correlations summarise
σ²ΛΛᵀ. Λ is linear in θ for every structure here, Λ = Σ_k θ_k E_k with constant E_k (`basis`,
lme4's `Lind` generalised), so the profiled criterion stays a smooth function of θ. Adding a
structure is one class here and one entry in `STRUCTURES` (lme4's R/covariance.R does the same
with `us`, `diag`, `cs`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import jax.numpy as jnp
import numpy as np


def namespace(x):
    """numpy for numpy inputs, jax.numpy otherwise (so Λ(θ) works in compiled and plain code)."""
    return np if isinstance(x, (np.ndarray, np.generic, float, int, list, tuple)) else jnp


@dataclass(frozen=True)
class Covariance:
    """One term's covariance structure over its random-effect columns (names in `columns`)."""

    columns: tuple[str, ...]
    kind: ClassVar[str] = ""

    @property
    def q(self) -> int:
        return len(self.columns)

    @property
    def n_theta(self) -> int:
        return len(self.labels())

    def basis(self) -> np.ndarray:
        """E (n_theta, q, q) with Λ(θ) = Σ_k θ_k E_k."""
        raise NotImplementedError

    def labels(self) -> tuple[str, ...]:
        """Each θ element's label within the term (lme4's θ names without the group)."""
        raise NotImplementedError

    def lower(self) -> np.ndarray:
        """Lower bounds of θ: 0 for scale parameters, −∞ for the rest."""
        raise NotImplementedError

    def start(self) -> np.ndarray:
        """lme4's starting point: Λ = I."""
        return np.where(np.isfinite(self.lower()), 1.0, 0.0)

    def summary_pairs(self) -> tuple[tuple[int, int], ...]:
        """Entries (i, j) of cov(b) reported: (i, i) is the sd of column i, (i, j) their correlation."""
        raise NotImplementedError

    def lam(self, theta):
        """Λ(θ) (..., q, q) from this term's θ (..., n_theta), numpy or JAX."""
        return namespace(theta).tensordot(theta, self.basis(), axes=1)

    def summary_names(self) -> tuple[str, ...]:
        """Names of the reported sds and correlations, as lme4's confint(oldNames = FALSE) writes them."""
        c = self.columns
        return tuple(f"sd_{c[i]}" if i == j else f"cor_{c[i]}.{c[j]}" for i, j in self.summary_pairs())

    def summary(self, cov):
        """The reported sds and correlations (..., m) of covariance matrices cov (..., q, q), numpy."""
        cov = np.asarray(cov)
        sd = np.sqrt(np.maximum(np.einsum("...ii->...i", cov), 0.0))
        out = []
        for i, j in self.summary_pairs():
            if i == j:
                out.append(sd[..., i])
                continue
            denom = sd[..., i] * sd[..., j]
            with np.errstate(invalid="ignore", divide="ignore"):
                out.append(np.where(denom > 0, cov[..., i, j] / np.where(denom > 0, denom, 1.0), np.nan))
        return np.stack(out, axis=-1)

    def single_entries(self) -> tuple[tuple[int, int], ...] | None:
        """(row, col) of Λ that each θ element is, when each is one entry of Λ (the batched fast path's form)."""
        E = self.basis()
        out = []
        for Ek in E:
            nz = np.argwhere(Ek != 0)
            if len(nz) != 1 or Ek[tuple(nz[0])] != 1.0:
                return None
            out.append((int(nz[0][0]), int(nz[0][1])))
        return tuple(out)


@dataclass(frozen=True)
class Unstructured(Covariance):
    """Any positive semi-definite cov(b): Λ lower triangular, θ its entries column by column (lme4's `us`)."""

    kind: ClassVar[str] = "us"

    def _entries(self) -> list[tuple[int, int]]:
        return [(i, j) for j in range(self.q) for i in range(j, self.q)]

    def basis(self) -> np.ndarray:
        E = np.zeros((len(self._entries()), self.q, self.q))
        for k, (i, j) in enumerate(self._entries()):
            E[k, i, j] = 1.0
        return E

    def labels(self) -> tuple[str, ...]:
        c = self.columns
        return tuple(c[i] if i == j else f"{c[i]}.{c[j]}" for i, j in self._entries())

    def lower(self) -> np.ndarray:
        return np.array([0.0 if i == j else -np.inf for i, j in self._entries()])

    def summary_pairs(self) -> tuple[tuple[int, int], ...]:
        return tuple(self._entries())


@dataclass(frozen=True)
class Diagonal(Covariance):
    """Independent random effects with their own variances (lme4's `diag`)."""

    kind: ClassVar[str] = "diag"

    def basis(self) -> np.ndarray:
        E = np.zeros((self.q, self.q, self.q))
        E[np.arange(self.q), np.arange(self.q), np.arange(self.q)] = 1.0
        return E

    def labels(self) -> tuple[str, ...]:
        return self.columns

    def lower(self) -> np.ndarray:
        return np.zeros(self.q)

    def summary_pairs(self) -> tuple[tuple[int, int], ...]:
        return tuple((i, i) for i in range(self.q))


@dataclass(frozen=True)
class Scalar(Covariance):
    """Independent random effects with one common variance: Λ = θI (glmmTMB's `homdiag`)."""

    kind: ClassVar[str] = "scalar"

    def basis(self) -> np.ndarray:
        return np.eye(self.q)[None]

    def labels(self) -> tuple[str, ...]:
        return (self.columns[0] if self.q == 1 else "(" + "+".join(self.columns) + ")",)

    def lower(self) -> np.ndarray:
        return np.zeros(1)

    def summary_pairs(self) -> tuple[tuple[int, int], ...]:
        return ((0, 0),)


@dataclass(frozen=True)
class CompoundSymmetry(Covariance):
    """One variance and one correlation shared by all q columns (nlme's pdCompSymm), e.g. `cs(0 + f | g)`.

    cov(b)/σ² = a²(I − J/q) + c²J/q is the eigen-decomposition of a compound-symmetric matrix, so
    Λ = a(I − J/q) + cJ/q (symmetric, linear in θ = (a, c) ≥ 0). Its variance is (a²(q−1) + c²)/q
    and its correlation (c² − a²)/(a²(q−1) + c²), which covers nlme's range −1/(q−1) < ρ < 1.
    """

    kind: ClassVar[str] = "cs"

    def __post_init__(self):
        if self.q < 2:
            raise ValueError(f"a compound-symmetric term needs at least two columns, got {self.columns}")

    def basis(self) -> np.ndarray:
        mean = np.full((self.q, self.q), 1.0 / self.q)
        return np.stack([np.eye(self.q) - mean, mean])

    def labels(self) -> tuple[str, ...]:
        return ("cs_contrast", "cs_mean")

    def lower(self) -> np.ndarray:
        return np.zeros(2)

    def summary_pairs(self) -> tuple[tuple[int, int], ...]:
        return ((0, 0), (1, 0))

STRUCTURES: dict[str, type[Covariance]] = {cls.kind: cls for cls in (Unstructured, Diagonal, Scalar, CompoundSymmetry)}


def structure(kind: str, columns: tuple[str, ...]) -> Covariance:
    """The structure named `kind` (a key of STRUCTURES) over `columns`."""
    if kind not in STRUCTURES:
        raise ValueError(f"unknown covariance structure {kind!r}; known: {', '.join(sorted(STRUCTURES))}")
    return STRUCTURES[kind](tuple(columns))
