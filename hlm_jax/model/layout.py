"""θ of a whole model: each random term's covariance structure and where its elements sit in θ.

θ is in lme4's order: terms by decreasing number of levels (as the design orders them), each
term's elements as its structure orders them. A grouping factor's Λ_k is block diagonal over
the terms on that factor; `FactorStructure` builds it from θ (the one place θ becomes Λ).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from ..design import ReTerm, term_group_names
from .covariance import Covariance, namespace, structure


@dataclass(frozen=True)
class FactorStructure:
    """The terms on one grouping factor: (offset in Λ_k, θ indices, structure) each; Λ_k is q × q."""

    q: int
    parts: tuple[tuple[int, tuple[int, ...], Covariance], ...]

    def basis(self, size: int) -> np.ndarray:
        """E (size, q, q) with Λ_k = Σ_i θ_i E_i for a θ of length `size`."""
        E = np.zeros((size, self.q, self.q))
        for offset, index, cov in self.parts:
            E[list(index), offset:offset + cov.q, offset:offset + cov.q] = cov.basis()
        return E

    def lam(self, theta):
        """Λ_k (..., q, q) at θ (..., size), numpy or JAX (a scalar θ is a θ of length 1)."""
        xp = namespace(theta)
        theta = xp.reshape(theta, (1,)) if xp.ndim(theta) == 0 else theta
        return xp.tensordot(theta, self.basis(theta.shape[-1]), axes=1)

    def single_entries(self) -> tuple[tuple[int, int, int], ...] | None:
        """(row, col, θ index) per θ element when each is one entry of Λ_k; None otherwise."""
        out = []
        for offset, index, cov in self.parts:
            entries = cov.single_entries()
            if entries is None:
                return None
            out += [(offset + i, offset + j, k) for (i, j), k in zip(entries, index)]
        return tuple(out)


@dataclass(frozen=True)
class ThetaLayout:
    """θ of a model: per random term (in lme4's order) its structure and its θ indices."""

    terms: tuple[ReTerm, ...]
    structures: tuple[Covariance, ...]
    index: tuple[tuple[int, ...], ...]

    @property
    def size(self) -> int:
        return sum(len(i) for i in self.index)

    @cached_property
    def lower(self) -> np.ndarray:
        return np.concatenate([s.lower() for s in self.structures])

    def start(self) -> np.ndarray:
        """lme4's starting value (Λ = I)."""
        return np.concatenate([s.start() for s in self.structures])

    @cached_property
    def names(self) -> tuple[str, ...]:
        return tuple(f"{t.factor}.{label}" for t, s in zip(self.terms, self.structures) for label in s.labels())

    @cached_property
    def block(self) -> np.ndarray:
        """The factor block of each θ element."""
        return np.concatenate([np.full(len(i), t.block) for t, i in zip(self.terms, self.index)])

    @property
    def n_blocks(self) -> int:
        return max(t.block for t in self.terms) + 1

    def factor(self, block: int) -> FactorStructure:
        """The structure of factor block `block` (θ indices into the whole θ), for computations: its columns
        are named by position, so models that differ only in names share compiled programs."""
        parts = tuple((t.offset, i, dataclasses.replace(s, columns=tuple(map(str, range(s.q)))))
                      for t, i, s in zip(self.terms, self.index, self.structures) if t.block == block)
        return FactorStructure(sum(s.q for _, _, s in parts), parts)

    def lambda_blocks(self, theta) -> list:
        """Λ_k of every factor block at θ."""
        return [self.factor(k).lam(theta) for k in range(self.n_blocks)]

    def single_entries(self) -> tuple[np.ndarray, np.ndarray]:
        """(rows, cols) in its factor's Λ_k of each θ element; only for structures whose θ are entries of Λ."""
        rows, cols = np.zeros(self.size, np.int64), np.zeros(self.size, np.int64)
        for k in range(self.n_blocks):
            entries = self.factor(k).single_entries()
            if entries is None:
                raise NotImplementedError("this computation needs θ elements that are entries of Λ "
                                          f"(unstructured or diagonal terms); the model has {self.kinds()}")
            for r, c, i in entries:
                rows[i], cols[i] = r, c
        return rows, cols

    def kinds(self) -> str:
        return ", ".join(sorted({s.kind for s in self.structures}))

    def term_lambdas(self, theta) -> list:
        """Λ(θ) of each term (its own q × q block), numpy."""
        theta = np.asarray(theta, dtype=float)
        return [s.lam(theta[..., list(i)]) for s, i in zip(self.structures, self.index)]

    def varcorr_names(self) -> list[str]:
        """Names of every term's sds and correlations (confint(oldNames = FALSE)), term by term."""
        return [f"{name}|{group}" for s, group in zip(self.structures, term_group_names(self.terms))
                for name in s.summary_names()]

    def sd_cor(self, theta, sigma) -> np.ndarray:
        """Rows of θ (n, size) and σ (n,) → sds and correlations (n, m), columns as `varcorr_names`."""
        theta, sigma = np.atleast_2d(theta), np.atleast_1d(sigma)
        out = []
        for s, lam in zip(self.structures, self.term_lambdas(theta)):
            cov = sigma[:, None, None] ** 2 * np.einsum("nij,nkj->nik", lam, lam)
            out.append(s.summary(cov))
        return np.concatenate(out, axis=1) if out else np.zeros((theta.shape[0], 0))


def theta_layout(terms: tuple[ReTerm, ...]) -> ThetaLayout:
    """The layout of θ for a design's random terms (each term's structure from its `covariance` kind)."""
    structures = tuple(structure(t.covariance, t.columns) for t in terms)
    index, start = [], 0
    for s in structures:
        index.append(tuple(range(start, start + s.n_theta)))
        start += s.n_theta
    return ThetaLayout(tuple(terms), structures, tuple(index))
