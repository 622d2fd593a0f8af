"""Bound-constrained Newton minimisation with exact autodiff derivatives, jit-compiled and vmappable.

One step: exact gradient and Hessian of the objective; variables at their lower
bound with the gradient pushing outwards are held; the Hessian of the free
variables is made positive definite by taking absolute eigenvalues; the step is
capped at `max_step` per coordinate; trial points are a ladder of step lengths
along it and short moves along a direction of negative curvature (to leave
saddle points). A single fit takes the first trial that decreases the objective;
a batch evaluates all trials at once (branch-free) and takes the best.
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


def gradient_and_hessian(fun: Callable, x, args):
    """Exact gradient and Hessian in one pass: linearise the gradient once, then push the k unit
    tangents through the linear map (cheaper than jax.hessian's forward-over-reverse from scratch)."""
    g, hvp = jax.linearize(lambda z: jax.grad(fun)(z, *args), x)
    return g, jax.vmap(hvp)(jnp.eye(x.size, dtype=x.dtype))


def _trial_points(x, g, H, lower, max_step):
    """Projected trial points (the ladder along the Newton direction, then escapes along negative
    curvature) and whether the free variables' Hessian is positive semi-definite."""
    free = ~((x <= lower) & (g > 0))
    Hf = jnp.where(free[:, None] & free[None, :], H, jnp.eye(x.size))
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
    convex = w_raw[0] >= -1e-8 * jnp.max(jnp.abs(w_raw))
    return jnp.maximum(jnp.concatenate([newton_trials, escape_trials]), lower[None, :]), convex


def _best_of_all(fun, trials, f, args):
    """Evaluate every trial at once (branch-free: suits a vmapped batch of problems)."""
    f_trials = jax.vmap(lambda t: fun(t, *args))(trials)
    f_trials = jnp.where(jnp.isfinite(f_trials), f_trials, jnp.inf)
    best = jnp.argmin(f_trials)
    return trials[best], f_trials[best]


def _first_decrease(fun, trials, f, args):
    """Evaluate trials in order and stop at the first that decreases f (one evaluation, usually)."""

    def keep_going(c):
        i, f_best, _ = c
        return (i < trials.shape[0]) & ~(f_best < f)

    def try_next(c):
        i, _, _ = c
        value = fun(trials[i], *args)
        return i + 1, jnp.where(jnp.isfinite(value), value, jnp.inf), trials[i]

    _, f_new, x_new = jax.lax.while_loop(keep_going, try_next, (0, jnp.asarray(jnp.inf, f.dtype), trials[0]))
    return x_new, f_new


def newton_step(fun: Callable, state: NewtonState, lower, args, gtol: float, max_step: float,
                search: str = "all") -> NewtonState:
    """One safeguarded projected Newton step for `fun(x, *args)` from `state`.

    The gradient and Hessian at state.x come first; if the projected gradient already meets
    the tolerance and the Hessian has no negative curvature (not a saddle), the state is marked
    converged and x stays. `search="all"` evaluates every
    trial point at once (for batches), "first" stops at the first decrease (for single fits).
    """
    x = state.x
    g, H = gradient_and_hessian(fun, x, args)
    grad_norm = jnp.max(jnp.abs(projected_gradient(x, g, lower)))
    trials, convex = _trial_points(x, g, H, lower, max_step)
    small = (grad_norm <= gtol * jnp.maximum(1.0, jnp.abs(state.f))) & convex
    pick = _best_of_all if search == "all" else _first_decrease
    x_try, f_try = pick(fun, trials, state.f, args)
    improved = (f_try < state.f) & ~small
    x_new = jnp.where(improved, x_try, x)
    f_new = jnp.where(improved, f_try, state.f)
    return NewtonState(x_new, f_new, grad_norm, state.iterations + improved.astype(jnp.int32), small,
                       ~improved & ~small)


def initial_state(fun: Callable, x0, lower, args) -> NewtonState:
    x0 = jnp.maximum(x0, lower)
    false = jnp.zeros((), bool)
    return NewtonState(x0, fun(x0, *args), jnp.asarray(jnp.inf, x0.dtype), jnp.zeros((), jnp.int32), false, false)


def minimize(fun: Callable, x0, lower, args=(), max_iter: int = 200, gtol: float = 1e-10,
             max_step: float = 0.5) -> NewtonState:
    """Minimise `fun(x, *args)` subject to x ≥ lower; stops when the projected gradient is
    below gtol·max(1, |f|), when no trial step decreases f, or after max_iter steps."""
    state = initial_state(fun, x0, lower, args)

    def keep_going(s):
        return (s.iterations < max_iter) & ~s.converged & ~s.stalled

    return jax.lax.while_loop(
        keep_going, lambda s: newton_step(fun, s, lower, args, gtol, max_step, search="first"), state)


class QuasiNewtonState(NamedTuple):
    """Where a projected BFGS minimisation stands (Binv: inverse-Hessian approximation)."""

    x: jax.Array
    f: jax.Array
    g: jax.Array
    Binv: jax.Array
    iterations: jax.Array
    done: jax.Array


def _bfgs_step(fun: Callable, s: QuasiNewtonState, lower, args, gtol: float, max_step: float) -> QuasiNewtonState:
    """One projected BFGS step: exact gradient, inverse-Hessian update, first Armijo point on the ladder."""
    free = ~((s.x <= lower) & (s.g > 0))
    both = free[:, None] & free[None, :]
    gf = jnp.where(free, s.g, 0.0)
    d = -jnp.where(both, s.Binv, 0.0) @ gf
    d = jnp.where(gf @ d < 0, d, -gf)
    d = d * jnp.minimum(1.0, max_step / jnp.maximum(jnp.max(jnp.abs(d)), 1e-300))
    value_and_grad = jax.value_and_grad(fun)

    def keep_going(c):
        i, x_t, f_t, _ = c
        armijo = f_t <= s.f + 1e-4 * (s.g @ (x_t - s.x))
        return (i < len(STEP_LADDER)) & ~(armijo & jnp.isfinite(f_t))

    def try_next(c):
        i, *_ = c
        x_t = jnp.maximum(s.x + jnp.asarray(STEP_LADDER, s.x.dtype)[i] * d, lower)
        f_t, g_t = value_and_grad(x_t, *args)
        return i + 1, x_t, f_t, g_t

    start = (0, s.x, jnp.asarray(jnp.inf, s.f.dtype), s.g)
    _, x_new, f_new, g_new = jax.lax.while_loop(keep_going, try_next, start)
    improved = jnp.isfinite(f_new) & (f_new < s.f)
    step, change = x_new - s.x, g_new - s.g
    curvature = step @ change
    rho = 1.0 / jnp.where(curvature > 1e-12, curvature, 1.0)
    eye = jnp.eye(s.x.size, dtype=s.x.dtype)
    updated = (eye - rho * jnp.outer(step, change)) @ s.Binv @ (eye - rho * jnp.outer(change, step)) \
        + rho * jnp.outer(step, step)
    first = s.iterations == 0
    scaled = jnp.where(curvature > 1e-12, curvature / (change @ change), 1.0) * eye
    Binv = jnp.where(curvature > 1e-12, jnp.where(first, scaled, updated), s.Binv)
    x_out = jnp.where(improved, x_new, s.x)
    f_out = jnp.where(improved, f_new, s.f)
    g_out = jnp.where(improved, g_new, s.g)
    small = jnp.max(jnp.abs(projected_gradient(x_out, g_out, lower))) <= gtol * jnp.maximum(1.0, jnp.abs(f_out))
    return QuasiNewtonState(x_out, f_out, g_out, Binv, s.iterations + 1, small | ~improved)


def minimize_then_polish(fun: Callable, x0, lower, args=(), max_iter: int = 200, gtol: float = 1e-10,
                         bfgs_gtol: float = 1e-7, max_step: float = 0.5) -> NewtonState:
    """Projected BFGS with exact gradients to near the optimum, then exact-Hessian Newton (`minimize`) to
    finish and to check second-order conditions. For objectives whose Hessian costs many gradients
    (a large dense Cholesky factor), this needs far fewer Hessians than Newton from the start."""
    x0 = jnp.maximum(x0, lower)
    f0, g0 = jax.value_and_grad(fun)(x0, *args)
    state = QuasiNewtonState(x0, f0, g0, jnp.eye(x0.size, dtype=x0.dtype), jnp.zeros((), jnp.int32),
                             jnp.zeros((), bool))
    state = jax.lax.while_loop(lambda s: (s.iterations < max_iter) & ~s.done,
                               lambda s: _bfgs_step(fun, s, lower, args, bfgs_gtol, max_step), state)
    polished = minimize(fun, state.x, lower, args, max_iter=max_iter, gtol=gtol, max_step=max_step)
    return polished._replace(iterations=polished.iterations + state.iterations)


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


# ---- many problems at once -------------------------------------------------------------------
# A vmapped while_loop runs every problem until the slowest stops (BATCHING.md point 1). The batch
# driver below instead takes a few Newton steps for the whole batch, then gathers the problems still
# running into ever smaller fixed-size batches (jnp.nonzero(..., size=K)) and scatters them back.
# Each step evaluates the derivatives once, at the point it moves to, and carries them in the state;
# the trial points (the same ladder and escapes as `newton_step`) cost one objective evaluation each.


class BatchState(NamedTuple):
    """One problem of a batch: the point, f, ∇f and ∇²f there, and how the minimisation stands."""

    x: jax.Array
    f: jax.Array
    g: jax.Array
    H: jax.Array
    grad_norm: jax.Array
    iterations: jax.Array
    converged: jax.Array
    stalled: jax.Array


def _free_hessian(x, g, H, lower):
    free = ~((x <= lower) & (g > 0))
    return free, jnp.where(free[:, None] & free[None, :], H, jnp.eye(x.size, dtype=x.dtype))


def _batch_state(derivs: Callable, x, args, lower, gtol: float, iterations, moved) -> BatchState:
    """Derivatives at x and the convergence test there: small projected gradient, no negative curvature."""
    f, g, H = derivs(x, *args)
    grad_norm = jnp.max(jnp.abs(projected_gradient(x, g, lower)))
    _, Hf = _free_hessian(x, g, H, lower)
    w = jnp.linalg.eigvalsh(Hf)
    convex = w[0] >= -1e-8 * jnp.max(jnp.abs(w))
    converged = (grad_norm <= gtol * jnp.maximum(1.0, jnp.abs(f))) & convex & jnp.isfinite(f)
    return BatchState(x, f, g, H, grad_norm, iterations, converged, ~moved & ~converged)


def batch_newton_step(fun: Callable, derivs: Callable, s: BatchState, lower, args, gtol: float,
                      max_step: float) -> BatchState:
    """One projected Newton step of one problem, from derivatives carried in `s` (vmap it over a batch).

    The direction is `newton_step`'s (absolute eigenvalues of the free Hessian, capped at max_step);
    all trial points are evaluated (branch-free) and the best taken. Near the optimum the criterion
    is flat to rounding, so a tiny full step with a positive-definite Hessian is taken even without
    a strict decrease. `derivs(x, *args)` returns (f, ∇f, ∇²f).
    """
    x = s.x
    free, Hf = _free_hessian(x, s.g, s.H, lower)
    gf = jnp.where(free, s.g, 0.0)
    w_raw, V = jnp.linalg.eigh(Hf)
    w = jnp.maximum(jnp.abs(w_raw), 1e-10 * jnp.max(jnp.abs(w_raw)) + 1e-300)
    d = -V @ ((V.T @ gf) / w)
    d = d * jnp.minimum(1.0, max_step / jnp.maximum(jnp.max(jnp.abs(d)), 1e-300))
    alphas = jnp.asarray(STEP_LADDER, x.dtype)
    curvature = jnp.where(w_raw[0] < 0, V[:, 0] * free, 0.0)
    escape = jnp.asarray(ESCAPE_STEPS, x.dtype)
    steps = jnp.concatenate([alphas[:, None] * d[None, :],
                             jnp.concatenate([escape, -escape])[:, None] * curvature[None, :]])
    trials = jnp.maximum(x[None, :] + steps, lower[None, :])
    f_trials = jax.vmap(lambda t: fun(t, *args))(trials)
    f_trials = jnp.where(jnp.isfinite(f_trials), f_trials, jnp.inf)
    best = jnp.argmin(f_trials)
    improved = f_trials[best] < s.f
    tiny = jnp.max(jnp.abs(d)) <= 1e-7 * (1.0 + jnp.max(jnp.abs(x)))
    flat = (w_raw[0] > 0) & tiny & (f_trials[0] <= s.f + 1e-12 * jnp.maximum(1.0, jnp.abs(s.f)))
    x_new = jnp.where(improved, trials[best], jnp.where(flat, trials[0], x))
    return _batch_state(derivs, x_new, args, lower, gtol, s.iterations + 1, improved | flat)


def minimize_batch(fun: Callable, derivs: Callable, x0, lower, batched, make_args: Callable,
                   max_iter: int = 200, gtol: float = 1e-10, max_step: float = 0.5,
                   schedule: tuple = ((1, 5), (8, 10)), last: int = 64) -> BatchState:
    """Minimise fun(x, *make_args(b)) subject to x ≥ lower for every problem b of a batch.

    x0 (B, k); `batched` is a pytree whose leaves all have leading axis B. `schedule` lists
    (divisor, steps): run up to `steps` Newton steps on the first B // divisor problems still
    running (the whole batch for divisor 1); after it, the remaining problems go through rounds
    of B // `last` at a time, each round run to the end (convergence, stall or max_iter).
    Everything has a fixed shape, so the whole driver is one jit-compiled program.
    """
    B = x0.shape[0]

    def init(x, b):
        x = jnp.maximum(x, lower)
        return _batch_state(derivs, x, make_args(b), lower, gtol, jnp.zeros((), jnp.int32), jnp.ones((), bool))

    def active(s):
        return ~s.converged & ~s.stalled & (s.iterations < max_iter)

    def step(s, b):
        return batch_newton_step(fun, derivs, s, lower, make_args(b), gtol, max_step)

    def run(s, b, n_steps):
        def keep_going(c):
            return (c[0] < n_steps) & jnp.any(active(c[1]))

        def body(c):
            i, s = c
            new = jax.vmap(step)(s, b)
            on = active(s)
            return i + 1, jax.tree_util.tree_map(lambda a, o: jnp.where(_expand(on, a), a, o), new, s)

        return jax.lax.while_loop(keep_going, body, (jnp.zeros((), jnp.int32), s))[1]

    def gathered(s, K, n_steps):
        idx = jnp.nonzero(active(s), size=K, fill_value=B)[0]
        valid = idx < B
        sub = jax.tree_util.tree_map(lambda a: jnp.take(a, idx, axis=0, mode="clip"), (s, batched))
        sub_s = sub[0]._replace(converged=sub[0].converged | ~valid)
        sub_s = run(sub_s, sub[1], n_steps)
        return jax.tree_util.tree_map(lambda a, v: a.at[idx].set(v, mode="drop"), s, sub_s)

    s = jax.vmap(init)(x0, batched)
    for divisor, n_steps in schedule:
        K = max(B // divisor, 1)
        s = run(s, batched, n_steps) if K == B else gathered(s, K, n_steps)
    K = max(B // last, 1)
    return jax.lax.while_loop(lambda s: jnp.any(active(s)), lambda s: gathered(s, K, max_iter), s)


def _expand(mask, a):
    return mask.reshape(mask.shape + (1,) * (a.ndim - 1))


def batch_converged(s: BatchState, stall_tol: float = 1e-6) -> jax.Array:
    """`summarize`'s rule per problem: converged, or stalled at a projected gradient below stall_tol·max(1, |f|)."""
    return s.converged | (s.stalled & (s.grad_norm <= stall_tol * jnp.maximum(1.0, jnp.abs(s.f))))
