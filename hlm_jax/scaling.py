"""Units never change the answer: models are fitted on columns scaled to unit size and mapped back exactly.

Rescaling a column is a reparametrisation. With X̃ = XE⁻¹, Z̃_k = Z_kD_k⁻¹ (E, D_k diagonal) and ỹ = y/s,

    β̃ = Eβ/s,  Λ̃_k = D_kΛ_k,  σ̃ = σ/s,  b̃_k = D_kb_k/s,
    ML deviance = ML deviancẽ + 2n log s,  REML criterion = REML criterioñ + 2(n − p) log s + 2 Σ_j log e_j.

The scales are each column's root mean square and the response's standard deviation, so the scaled
problem (and with it the optimiser's path, start and tolerances) is the same whatever units the data
come in.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from .design import Design
from .formula.sparse import issparse, scipy_sparse
from .model.layout import ThetaLayout


@dataclass(frozen=True)
class Scales:
    """Column scales of one design: X's (p,), each factor block's Z (q_k,), the response's (a float, or
    one per problem (m,) for a batch), and, per θ element, the scale of its row of Λ (θ̃ = θ · theta)."""

    x: np.ndarray
    z: tuple
    y: float | np.ndarray
    theta: np.ndarray

    def _y(self, extra: int) -> np.ndarray:
        """The response scale with `extra` trailing axes (to broadcast over a batch's leading axis)."""
        y = np.asarray(self.y, dtype=float)
        return y.reshape(y.shape + (1,) * extra)

    def criterion_shift(self, n, reml: bool):
        """Original criterion minus the scaled problem's."""
        p = len(self.x)
        return 2.0 * (np.asarray(n) - reml * p) * np.log(self._y(0)) + reml * 2.0 * float(np.sum(np.log(self.x)))

    def beta(self, beta_scaled: np.ndarray) -> np.ndarray:
        """β from β̃ (last axis: the p coefficients)."""
        return np.asarray(beta_scaled) * self._y(1) / self.x

    def vcov(self, vcov_scaled: np.ndarray) -> np.ndarray:
        """cov(β) from cov(β̃) (last two axes p × p)."""
        return np.asarray(vcov_scaled) * self._y(2) ** 2 / np.outer(self.x, self.x)

    def modes(self, block: int, b_scaled: np.ndarray) -> np.ndarray:
        """Factor block `block`'s conditional modes from the scaled ones (last axis: its q columns)."""
        return np.asarray(b_scaled) * self._y(1) / self.z[block]

    def mode_covs(self, block: int, cov_scaled: np.ndarray) -> np.ndarray:
        """Factor block `block`'s conditional covariances from the scaled ones (last two axes q × q)."""
        return np.asarray(cov_scaled) * self._y(2) ** 2 / np.outer(self.z[block], self.z[block])

    def unscale_batch(self, out: dict, n, reml: bool) -> dict:
        """A batch's results (θ, objective, β, σ, se: leading axis over problems) in the data's units."""
        return dict(out, theta=out["theta"] / self.theta, objective=out["objective"] + self.criterion_shift(n, reml),
                    beta=self.beta(out["beta"]), sigma=out["sigma"] * self._y(0), se=self.beta(out["se"]))


def rms(sum_of_squares, n):
    """Root mean square from a sum of squares over n values; 1 where it is zero or not finite."""
    with np.errstate(invalid="ignore", divide="ignore"):
        value = np.sqrt(np.asarray(sum_of_squares, dtype=float) / np.asarray(n, dtype=float))
    return np.where((value > 0) & np.isfinite(value), value, 1.0)


def column_scales(A) -> np.ndarray:
    """Root mean square of each column of a dense or sparse A; 1 for a column that is zero."""
    squares = A.multiply(A).sum(axis=0) if issparse(A) else np.sum(np.asarray(A, dtype=float) ** 2, axis=0)
    return rms(np.asarray(squares, dtype=float).ravel(), max(A.shape[0], 1))


def response_scale(y: np.ndarray) -> float:
    """The response's standard deviation (its root mean square when it is constant; 1 when it is 0)."""
    centred = y - np.mean(y)
    return float(rms(centred @ centred if centred @ centred > 1e-16 * (y @ y) else y @ y, len(y)))


def z_scales(Zs, layout: ThetaLayout) -> tuple:
    """Per factor block (Z_k in `Zs`), its Z columns' scales; a term whose θ elements are not single entries
    of Λ (a common variance, Λ = θI) gets one scale for all its columns, so that DΛ keeps the term's form."""
    z = [column_scales(Z) for Z in Zs]
    for t, cov in zip(layout.terms, layout.structures):
        if cov.single_entries() is None:
            cols = slice(t.offset, t.offset + cov.q)
            z[t.block][cols] = np.sqrt(np.mean(z[t.block][cols] ** 2))
    return tuple(z)


def theta_scales(layout: ThetaLayout, z: tuple) -> np.ndarray:
    """Per θ element, the scale of its rows of Λ (one scale per θ element by `z_scales`' construction)."""
    out = []
    for t, cov in zip(layout.terms, layout.structures):
        d = z[t.block][t.offset:t.offset + cov.q]
        out += [d[np.argwhere(E)[0][0]] for E in cov.basis()]
    return np.asarray(out, dtype=float)


def design_scales(design: Design, layout: ThetaLayout) -> Scales:
    """The scales that bring `design`'s X and Z columns and its response to unit size."""
    info = design.info
    z = z_scales([f.Z for f in info.factors], layout)
    return Scales(column_scales(info.X), z, response_scale(info.y), theta_scales(layout, z))


def scale_design(design: Design, scales: Scales) -> Design:
    """The design in scaled units: X̃ = XE⁻¹, each Z̃_k = Z_kD_k⁻¹, ỹ = y/s (padded tensors and rows alike)."""
    info = design.info
    X = info.X @ scipy_sparse().diags(1.0 / scales.x) if issparse(info.X) else info.X / scales.x
    buckets = tuple(dataclasses.replace(b, X=b.X / scales.x, Z=b.Z / scales.z[0], y=b.y / scales.y)
                    for b in design.buckets)
    factors = tuple(dataclasses.replace(f, Z=f.Z / zk) for f, zk in zip(info.factors, scales.z))
    return Design(buckets, dataclasses.replace(info, X=X, y=info.y / scales.y, factors=factors))


def unit_scales(info, layout: ThetaLayout) -> Scales:
    """Scales of 1 everywhere (a fit made in the data's own units)."""
    return Scales(np.ones(info.p), tuple(np.ones(f.q) for f in info.factors), 1.0, np.ones(layout.size))
