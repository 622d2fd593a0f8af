"""Bound-constrained Newton minimisation with exact autodiff derivatives, jit-compiled and vmappable.

One step: exact gradient and Hessian of the objective; variables at their lower
bound with the gradient pushing outwards are held; the Hessian of the free
variables is made positive definite by taking absolute eigenvalues; the step is
capped at `max_step` per coordinate and a fixed ladder of step lengths is tried
at once (branch-free, so a batch of problems can step together), together with
short moves along a direction of negative curvature (to leave saddle points);
the best projected trial point is taken.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

STEP_LADDER = (1.0, 0.5, 0.25, 0.1, 0.03, 0.01, 1e-3, 1e-4)
ESCAPE_STEPS = (0.3, 0.03, 0.003)


class NewtonState(NamedTuple):
    """Where one minimisation stands."""

    x: jax.Array
    f: jax.Array
    grad_norm: jax.Array
    iterations: jax.Array
    converged: jax.Array
    stalled: jax.Array


@dataclass(frozen=True)
class OptSummary:
    """The optimiser's record, printed with every fit."""

    converged: bool
    iterations: int
    grad_norm: float
    objective: float
    message: str

    def __str__(self) -> str:
        return (f"Newton (exact Hessian): {self.iterations} iterations, projected |grad|∞ = {self.grad_norm:.2e}, "
                f"{self.message}")


def projected_gradient(x, g, lower):
    """Gradient with the components that push against an active bound set to zero."""
    at_bound = (x <= lower) & (g > 0)
    return jnp.where(at_bound, 0.0, g)


def newton_step(fun: Callable, state: NewtonState, lower, args, gtol: float, max_step: float) -> NewtonState:
    """One safeguarded projected Newton step for `fun(x, *args)`."""
    x = state.x
    g = jax.grad(fun)(x, *args)
    H = jax.hessian(fun)(x, *args)
    free = ~((x <= lower) & (g > 0))
    both = free[:, None] & free[None, :]
    Hf = jnp.where(both, H, jnp.eye(x.size))
    gf = jnp.where(free, g, 0.0)
    w_raw, V = jnp.linalg.eigh(Hf)
    w = jnp.maximum(jnp.abs(w_raw), 1e-10 * jnp.max(jnp.abs(w_raw)) + 1e-300)
    d = -V @ ((V.T @ gf) / w)
    d = d * jnp.minimum(1.0, max_step / jnp.maximum(jnp.max(jnp.abs(d)), 1e-300))
    alphas = jnp.asarray(STEP_LADDER, x.dtype)
    newton_trials = x[None, :] + alphas[:, None] * d[None, :]
    # Saddle points (e.g. a diagonal θ at 0, where the criterion is even in it) have zero gradient
    # along negative curvature: also try moving along the most negative eigenvector, both ways.
    curvature = jnp.where(w_raw[0] < 0, V[:, 0] * free, 0.0)
    escape = jnp.asarray(ESCAPE_STEPS, x.dtype)
    escape_trials = x[None, :] + jnp.concatenate([escape, -escape])[:, None] * curvature[None, :]
    trials = jnp.maximum(jnp.concatenate([newton_trials, escape_trials]), lower[None, :])
    f_trials = jax.vmap(lambda t: fun(t, *args))(trials)
    f_trials = jnp.where(jnp.isfinite(f_trials), f_trials, jnp.inf)
    best = jnp.argmin(f_trials)
    improved = f_trials[best] < state.f
    x_new = jnp.where(improved, trials[best], x)
    f_new = jnp.where(improved, f_trials[best], state.f)
    pg = projected_gradient(x_new, jax.grad(fun)(x_new, *args), lower)
    grad_norm = jnp.max(jnp.abs(pg))
    small = grad_norm <= gtol * jnp.maximum(1.0, jnp.abs(f_new))
    return NewtonState(x_new, f_new, grad_norm, state.iterations + 1, small, ~improved & ~small)


def initial_state(fun: Callable, x0, lower, args) -> NewtonState:
    x0 = jnp.maximum(x0, lower)
    f0 = fun(x0, *args)
    pg = projected_gradient(x0, jax.grad(fun)(x0, *args), lower)
    false = jnp.zeros((), bool)
    return NewtonState(x0, f0, jnp.max(jnp.abs(pg)), jnp.zeros((), jnp.int32), false, false)


def minimize(fun: Callable, x0, lower, args=(), max_iter: int = 200, gtol: float = 1e-10,
             max_step: float = 0.5) -> NewtonState:
    """Minimise `fun(x, *args)` subject to x ≥ lower; stops when the projected gradient is
    below gtol·max(1, |f|), when no trial step decreases f, or after max_iter steps."""
    state = initial_state(fun, x0, lower, args)

    def keep_going(s):
        return (s.iterations < max_iter) & ~s.converged & ~s.stalled

    return jax.lax.while_loop(keep_going, lambda s: newton_step(fun, s, lower, args, gtol, max_step), state)


def summarize(state: NewtonState, stall_tol: float = 1e-6) -> OptSummary:
    """Turn a final state into a record; a stalled run with a small gradient counts as converged."""
    f = float(state.f)
    grad_norm = float(state.grad_norm)
    if bool(state.converged):
        return OptSummary(True, int(state.iterations), grad_norm, f, "converged")
    if bool(state.stalled) and grad_norm <= stall_tol * max(1.0, abs(f)):
        return OptSummary(True, int(state.iterations), grad_norm, f,
                          "converged (no further decrease at machine precision)")
    reason = "no step decreased the objective" if bool(state.stalled) else "iteration limit reached"
    return OptSummary(False, int(state.iterations), grad_norm, f, f"NOT converged: {reason}")


def as_numpy(state: NewtonState) -> NewtonState:
    return NewtonState(*(np.asarray(v) for v in state))
