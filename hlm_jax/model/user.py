"""User-written per-group models: a group's log-likelihood as a JAX function gets fitting, SEs, the
bootstrap and batched fits.

    def loglik(params, group, b):          # log p(y_g | b_g): group = the group's padded columns + "mask"
        r = (group["y"] - params["beta"][0] - params["beta"][1] * group["x"] - b[0]) / params["scale"]
        return jnp.sum(group["mask"] * (student_t_logpdf(r, params["nu"]) - jnp.log(params["scale"])))

    model = hj.GroupModel(loglik, constraints={"scale": "positive", "nu": "positive", "sd": "positive"},
                          random="sd", simulate=draw)
    fit = hj.fit_group(model, data, group="id", start={"beta": [0.0, 0.0], "scale": 1.0, "nu": 5.0, "sd": 1.0})
    fit.table, fit.bootstrap(200), fit.fit_many(Y)

Parameters are a dict of arrays (any shapes) on the users' scale; `constraints` names each one's
range ("real", "positive", "unit" for (0, 1), "correlation" for (−1, 1)); the optimiser works on the
unconstrained values (log, logit, atanh). With `random="sd"` the group has random effects b = Λu,
u ~ N(0, I), Λ = params["sd"] (a scalar, or a q × q lower-triangular factor), integrated out by the
Laplace approximation of `model.laplace` (exact for Gaussian models); without `random`, `loglik`
is the group's marginal log-likelihood (loglik(params, group)). SEs come from the exact Hessian of
−2 log L in the unconstrained parameters, mapped to the users' scale by the delta method.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from . import laplace

TRANSFORMS = {
    "real": (lambda v: v, lambda x: x, "identity"),
    "positive": (np.log, jnp.exp, "log"),
    "unit": (lambda v: np.log(v / (1 - v)), jax.nn.sigmoid, "logit"),
    "correlation": (np.arctanh, jnp.tanh, "atanh"),
}


@dataclass(frozen=True)
class GroupModel(laplace.GroupedModel):
    """A model given by one group's log-likelihood (see the module docstring).

    loglik(params, group, b) → log p(y_g | b_g) (random effects) or loglik(params, group) (none);
    curvature(params, group, b) optionally replaces the exact −∇²_b loglik in the Laplace
    log-determinant (e.g. an expected information that stays positive); simulate(key, params,
    group, b) → a response (n,) for the group's rows, needed by `bootstrap`.
    """

    loglik: Callable
    constraints: tuple = ()
    random: str | None = None
    curvature_fn: Callable | None = field(default=None, compare=False)
    simulate: Callable | None = field(default=None, compare=False)
    response: str = "y"

    def __post_init__(self):
        items = self.constraints.items() if isinstance(self.constraints, dict) else self.constraints
        items = tuple(sorted((str(k), str(v)) for k, v in items))
        bad = [f"{k}: {v!r}" for k, v in items if v not in TRANSFORMS]
        if bad:
            raise ValueError(f"unknown constraint ({', '.join(bad)}); use one of {', '.join(TRANSFORMS)}")
        object.__setattr__(self, "constraints", items)

    def kind(self, name: str) -> str:
        return dict(self.constraints).get(name, "real")

    def logdens(self, params, data, b):
        return self.loglik(params, data, b)

    def curvature(self, params, data, b):
        if self.curvature_fn is None:
            return super().curvature(params, data, b)
        return self.curvature_fn(params, data, b)

    def lam(self, params):
        """Λ (q × q) from the random-effect parameter (a scalar sd or a lower-triangular factor)."""
        value = jnp.asarray(params[self.random])
        return jnp.tril(value) if value.ndim == 2 else jnp.reshape(value, (1, 1))

    def total_loglik(self, params, buckets) -> jax.Array:
        """log L: Σ_g of the groups' log-likelihoods (Laplace over b_g when the model has random effects)."""
        if self.random is not None:
            return laplace.grouped_loglik(self, params, self.lam(params), buckets)
        return sum(jnp.sum(jax.vmap(self.loglik, (None, 0))(params, data)) for data in buckets)


@dataclass(frozen=True)
class Packing:
    """Free parameters ↔ one unconstrained vector: names, shapes and kinds in order, fixed values aside."""

    names: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]
    kinds: tuple[str, ...]

    @property
    def sizes(self) -> list[int]:
        return [int(np.prod(s)) for s in self.shapes]

    def to_vector(self, params: dict) -> np.ndarray:
        """Users'-scale values → the unconstrained vector."""
        return np.concatenate([np.ravel(TRANSFORMS[k][0](np.asarray(params[n], dtype=float)))
                               for n, k in zip(self.names, self.kinds)]) if self.names else np.zeros(0)

    def to_params(self, x, fixed: dict) -> dict:
        """The unconstrained vector (and the fixed values) → parameters on the users' scale."""
        out, start = dict(fixed), 0
        for n, shape, kind, size in zip(self.names, self.shapes, self.kinds, self.sizes):
            out[n] = TRANSFORMS[kind][1](jnp.reshape(x[start:start + size], shape))
            start += size
        return out

    def labels(self) -> list[str]:
        """One label per vector element: the name, with its index for arrays."""
        return [n if not shape else f"{n}[{', '.join(map(str, idx))}]"
                for n, shape in zip(self.names, self.shapes) for idx in np.ndindex(*shape)]

    def scales(self) -> list[str]:
        return [TRANSFORMS[k][2] for k, size in zip(self.kinds, self.sizes) for _ in range(size)]
