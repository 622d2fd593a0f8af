"""A model structure to fit in a batch (statistics that do not change between problems) and the
batched fit of any target: slot-queue Newton over its criterion, then the estimates."""
from __future__ import annotations

from dataclasses import dataclass, field

import jax
import jax.numpy as jnp
import numpy as np

from ..fit import gaussian_derivatives, gaussian_objective
from ..likelihood import sums
from ..likelihood.lmm import Estimates, Stats, estimates
from ..model.layout import FactorStructure, ThetaLayout
from ..optimize import batch_converged, minimize_queue
from ..scaling import Scales
from .devices import to_device


# Under the batch's vmap every jitted function called inside is traced and then batched at each call; a second
# call of the same function with the same shapes reuses most of that work (JAX caches both). So the trial
# search's criterion and the final estimates are one jitted function (the criterion, β̂, σ̂², cov(β̂)/σ̂²), and the
# derivatives, called once, are not wrapped in a jit of their own. Where `sums` does not apply, the fit's own.
_fixed_effects = jax.jit(sums.fixed_effects)


def batch_objective(theta, stats: Stats, reml):
    """The profiled criterion of a batch's trial search (`fit.gaussian_objective`'s value)."""
    return _fixed_effects(theta, stats, reml)[0] if sums.applies(stats) else gaussian_objective(theta, stats, reml)


def batch_derivatives(theta, stats: Stats, reml):
    """(f, ∇f, ∇²f) of a batch's Newton steps (`fit.gaussian_derivatives`' values)."""
    if sums.applies(stats):
        return sums.objective_derivatives(theta, stats, reml)
    return gaussian_derivatives(theta, stats, reml)


def batch_estimates(theta, stats: Stats, reml) -> Estimates:
    """β̂, σ̂ and cov(β̂) at θ̂ (the conditional modes are not needed in a batch: None), from the trial search's
    function where `sums` applies, else `lmm.estimates`."""
    if not sums.applies(stats):
        return estimates(theta, stats, reml)
    f, beta, sigma2, unscaled = _fixed_effects(theta, stats, reml)
    return Estimates(beta, jnp.sqrt(sigma2), sigma2 * unscaled, None, None, f)


@jax.tree_util.register_dataclass
@dataclass(frozen=True)
class Target:
    """A model structure to fit in a batch: its shared statistics (those that do not depend on y),
    start, bounds and criterion. Leaves are arrays; layout fields are static."""

    ZtZ: jax.Array
    ZtX: jax.Array
    XtX: jax.Array
    n: jax.Array
    x0: jax.Array
    lower: jax.Array
    reml: jax.Array
    unit: tuple
    structure: FactorStructure = field(metadata=dict(static=True))

    objective = staticmethod(batch_objective)
    derivatives = staticmethod(batch_derivatives)
    estimates = staticmethod(batch_estimates)

    def stats(self, *b) -> Stats:
        """One problem's Stats from its y-dependent parts (Zᵀy, Xᵀy, yᵀy; divided by `unit` into the
        target's scaled units, see `scaling`), or from all seven parts (ZᵀZ, ZᵀX, Zᵀy, XᵀX, Xᵀy, yᵀy, n,
        already scaled) when every problem has its own design."""
        if len(b) == 7:
            return Stats(*b, self.structure)
        Zty, Xty, yty = (v / u for v, u in zip(b, self.unit))
        return Stats(self.ZtZ, self.ZtX, Zty, self.XtX, Xty, yty, self.n, self.structure)


def group_sums(codes: np.ndarray, G: int, left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Σ_rows-in-g left_r right_rᵀ for every group: (G, a, b) from left (n, a), right (n, b)."""
    a, b = left.shape[1], right.shape[1]
    out = np.empty((G, a, b))
    for i in range(a):
        for j in range(b):
            out[:, i, j] = np.bincount(codes, left[:, i] * right[:, j], minlength=G)
    return out


def make_target(X, Z, codes, G, layout: ThetaLayout, x0, reml, scales: Scales) -> Target:
    """The target in `scales`' units: X and Z columns scaled, y-dependent statistics divided on the fly,
    start x0 given as θ in the data's units."""
    X, Z = X / scales.x, Z / scales.z[0]
    unit = (scales.z[0] * scales.y, scales.x * scales.y, np.asarray(scales.y) ** 2)
    return Target(to_device(group_sums(codes, G, Z, Z)), to_device(group_sums(codes, G, Z, X)),
                  to_device(X.T @ X), jnp.asarray(float(X.shape[0])), to_device(x0 * scales.theta, float),
                  to_device(layout.lower, float), jnp.asarray(float(reml)),
                  tuple(to_device(u, float) for u in unit), layout.factor(0))


def fit_target(target, data, n_valid, width: int, max_iter: int) -> dict:
    """Fit one target structure (`Target` or `rows.CrossedTarget`) to a queue of its y-dependent
    statistics and evaluate the estimates."""

    def make_args(b):
        return (target.stats(*b), target.reml)

    state = minimize_queue(target.objective, target.derivatives, target.x0, target.lower, data,
                           make_args, n_valid, width, max_iter=max_iter)
    est = jax.vmap(lambda x, b: target.estimates(x, target.stats(*b), target.reml))(state.x, data)
    return dict(theta=state.x, objective=state.f, beta=est.beta, sigma=est.sigma,
                se=jnp.sqrt(jnp.diagonal(est.vcov_beta, axis1=-2, axis2=-1)),
                converged=batch_converged(state), iterations=state.iterations, grad_norm=state.grad_norm)
