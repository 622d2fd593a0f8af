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
STALL_TOL = 1e-10
ESCAPE_STEPS = (0.3, 0.03, 0.003)


class NewtonState(NamedTuple):
    """Where one minimisation stands. `grad_norm`, `convex` and `decrement` describe the last point whose
    derivatives were taken: projected |∇f|∞, whether the free variables' Hessian has no significant negative
    curvature (`_trial_points`' `nearly_convex`), and the Newton decrement ½ gᵀ|H|⁻¹g on the free set (the
    decrease a Newton step predicts)."""

    x: jax.Array
    f: jax.Array
    grad_norm: jax.Array
    iterations: jax.Array
    converged: jax.Array
    stalled: jax.Array
    convex: jax.Array
    decrement: jax.Array


@dataclass(frozen=True)
class OptSummary:
    """The optimiser's record, printed with every fit."""

    converged: bool
    iterations: int
    grad_norm: float
    objective: float
    message: str
    method: str = "projected Newton, exact gradient and Hessian"

    def __str__(self) -> str:
        return (f"{self.method}: {self.iterations} iterations, projected |grad|∞ = {self.grad_norm:.2e}, "
                f"{self.message}")


def projected_gradient(x, g, lower):
    """Gradient with the components that push against an active bound set to zero."""
    at_bound = (x <= lower) & (g > 0)
    return jnp.where(at_bound, 0.0, g)


def tolerance(f, gtol: float):
    """The stopping tolerance at criterion value f: gtol·max(1, |f|). Criteria are fitted in scaled units
    (see `scaling`), where f does not depend on the data's units, so neither does the tolerance."""
    return gtol * jnp.maximum(1.0, jnp.abs(f))


def gradient_and_hessian(fun: Callable, x, args):
    """Exact gradient and Hessian in one pass: linearise the gradient once, then push the k unit
    tangents through the linear map (cheaper than jax.hessian's forward-over-reverse from scratch)."""
    g, hvp = jax.linearize(lambda z: jax.grad(fun)(z, *args), x)
    return g, jax.vmap(hvp)(jnp.eye(x.size, dtype=x.dtype))


def forward_hessian(fun: Callable, x, args):
    """Gradient and Hessian as forward-mode derivatives of the reverse-mode gradient (jacfwd of grad):
    for objectives with an implicitly differentiated inner solve (the Laplace approximation) this
    runs several times faster than linearising the gradient."""
    def grad_twice(z):
        g = jax.grad(fun)(z, *args)
        return g, g

    H, g = jax.jacfwd(grad_twice, has_aux=True)(x)
    return g, H


def _trial_points(x, g, H, lower, max_step, hold_tol):
    """Projected trial points (the ladder along the Newton direction, then escapes along negative
    curvature), whether the free variables' Hessian is positive semi-definite (to 1e-8 relative), whether
    it is nearly so, and the Newton decrement.

    Nearly: its smallest eigenvalue is ≥ −√(hold_tol·max|λ|) (or convex), the second-order half of an approximate
    second-order point (|g| ≤ ε, λ_min ≥ −√(Lε); Nesterov & Polyak 2006). It is trusted only where every
    trial, escapes along that curvature included, failed to decrease f: at a variance of 0 the criterion
    is flat along a rotation of the other variances, and a residual gradient at rounding level bends
    that flat direction down by about |g|/|θ| while no step can decrease f.

    A variable at its bound is held only when its gradient is clearly positive (above `hold_tol`): one
    with a gradient that is zero to rounding (a variance at 0 where the criterion is even in it) stays
    free, so negative curvature along it is seen (a saddle) rather than hidden behind the bound."""
    free = ~((x <= lower) & (g > hold_tol))
    Hf = jnp.where(free[:, None] & free[None, :], H, jnp.eye(x.size))
    gf = jnp.where(free, g, 0.0)
    w_raw, V = jnp.linalg.eigh(Hf)
    w = jnp.maximum(jnp.abs(w_raw), 1e-10 * jnp.max(jnp.abs(w_raw)) + 1e-300)
    gv = V.T @ gf
    decrement = 0.5 * jnp.sum(gv * gv / w)
    d = -V @ (gv / w)
    d = d * jnp.minimum(1.0, max_step / jnp.maximum(jnp.max(jnp.abs(d)), 1e-300))
    alphas = jnp.asarray(STEP_LADDER, x.dtype)
    steps = alphas[:, None] * d[None, :]
    newton_trials = x[None, :] + steps
    # a step that lands on a bound up to rounding lands on it exactly (θ = 0, not 5e-17)
    on_bound = newton_trials - lower[None, :] <= 1e-12 * (jnp.abs(x)[None, :] + jnp.abs(steps))
    newton_trials = jnp.where(on_bound, lower[None, :], newton_trials)
    # Saddle points (e.g. a diagonal θ at 0, where the criterion is even in it) have zero gradient
    # along negative curvature: also try moving along the most negative eigenvector, both ways.
    curvature = jnp.where(w_raw[0] < 0, V[:, 0] * free, 0.0)
    escape = jnp.asarray(ESCAPE_STEPS, x.dtype)
    escape_trials = x[None, :] + jnp.concatenate([escape, -escape])[:, None] * curvature[None, :]
    scale = jnp.max(jnp.abs(w_raw))
    convex = w_raw[0] >= -1e-8 * scale
    nearly_convex = w_raw[0] >= -jnp.maximum(1e-8 * scale, jnp.sqrt(hold_tol * scale))
    trials = jnp.maximum(jnp.concatenate([newton_trials, escape_trials]), lower[None, :])
    return trials, convex, nearly_convex, decrement


def _best_of_all(fun, trials, f, args):
    """Evaluate every trial at once (branch-free: suits a vmapped batch of problems)."""
    f_trials = jax.vmap(lambda t: fun(t, *args))(trials)
    f_trials = jnp.where(jnp.isfinite(f_trials), f_trials, jnp.inf)
    best = jnp.argmin(f_trials)
    return trials[best], f_trials[best]


def _first_decrease(fun, trials, f, args, limit):
    """Evaluate the first `limit` trials in order and stop at the first that decreases f (one evaluation, usually)."""

    def keep_going(c):
        i, f_best, _ = c
        return (i < limit) & ~(f_best < f)

    def try_next(c):
        i, _, _ = c
        value = fun(trials[i], *args)
        return i + 1, jnp.where(jnp.isfinite(value), value, jnp.inf), trials[i]

    _, f_new, x_new = jax.lax.while_loop(keep_going, try_next, (0, jnp.asarray(jnp.inf, f.dtype), trials[0]))
    return x_new, f_new


def newton_step(fun: Callable, state: NewtonState, lower, args, gtol: float, max_step: float,
                search: str = "all", derivs: Callable = gradient_and_hessian) -> NewtonState:
    """One safeguarded projected Newton step for `fun(x, *args)` from `state`.

    The gradient and Hessian at state.x come first; if the projected gradient already meets
    the tolerance and the Hessian has no negative curvature (not a saddle), the state is marked
    converged and x stays. `search="all"` evaluates every
    trial point at once (for batches), "first" stops at the first decrease (for single fits).
    `derivs(fun, x, args)` gives (∇f, ∇²f).
    """
    x = state.x
    g, H = derivs(fun, x, args)
    grad_norm = jnp.max(jnp.abs(projected_gradient(x, g, lower)))
    tol = tolerance(state.f, gtol)
    trials, convex, nearly_convex, decrement = _trial_points(x, g, H, lower, max_step, tol)
    small = (grad_norm <= tol) & convex
    # a single fit whose predicted decrease is below f's rounding tries only the full Newton step (a ladder
    # could not see a decrease) and then stops as flat below
    rounding = convex & (decrement <= 1e-12 * jnp.maximum(1.0, jnp.abs(state.f))) & (search != "all")
    if search == "all":
        x_try, f_try = _best_of_all(fun, trials, state.f, args)
    else:
        # at a verified point no trial is needed: it stops after one (any finite value beats f = inf)
        x_try, f_try = _first_decrease(fun, trials, jnp.where(small, jnp.inf, state.f), args,
                                       jnp.where(rounding, 1, trials.shape[0]))
    improved = (f_try < state.f) & ~small & ~rounding
    # flat to rounding (as in `batch_newton_steps`): when no trial decreases f, the full Newton step with no
    # significant negative curvature is still taken if it does not raise f beyond rounding, and the run stops there
    final = ~improved & ~small & nearly_convex
    f_final = jax.lax.cond(final & ~rounding, lambda: fun(trials[0], *args), lambda: jnp.where(rounding, f_try, jnp.inf))
    flat = final & (f_final <= state.f + 1e-12 * jnp.maximum(1.0, jnp.abs(state.f)))
    x_new = jnp.where(improved, x_try, jnp.where(flat, trials[0], x))
    f_new = jnp.where(improved, f_try, jnp.where(flat, f_final, state.f))
    return NewtonState(x_new, f_new, grad_norm, state.iterations + improved.astype(jnp.int32), small,
                       ~improved & ~small, nearly_convex, decrement)


def initial_state(fun: Callable, x0, lower, args) -> NewtonState:
    x0 = jnp.maximum(x0, lower)
    false = jnp.zeros((), bool)
    inf = jnp.asarray(jnp.inf, x0.dtype)
    return NewtonState(x0, fun(x0, *args), inf, jnp.zeros((), jnp.int32), false, false, false, inf)


def minimize(fun: Callable, x0, lower, args=(), max_iter: int = 200, gtol: float = 1e-10,
             max_step: float = 0.5, derivs: Callable = gradient_and_hessian) -> NewtonState:
    """Minimise `fun(x, *args)` subject to x ≥ lower; stops when the projected gradient is
    below gtol·max(1, |f|) with no negative curvature, when no trial step decreases f, or after max_iter
    steps. `converged` in the result is `verified`: first- and second-order conditions, bounds included.
    `derivs` gives (∇f, ∇²f) (default `gradient_and_hessian`; `forward_hessian` where that is cheaper)."""
    state = initial_state(fun, x0, lower, args)

    def keep_going(s):
        return (s.iterations < max_iter) & ~s.converged & ~s.stalled

    state = jax.lax.while_loop(
        keep_going, lambda s: newton_step(fun, s, lower, args, gtol, max_step, search="first", derivs=derivs), state)
    return state._replace(converged=verified(state))


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
    Binv = jnp.where(curvature > 1e-12, updated, s.Binv)
    x_out = jnp.where(improved, x_new, s.x)
    f_out = jnp.where(improved, f_new, s.f)
    g_out = jnp.where(improved, g_new, s.g)
    small = jnp.max(jnp.abs(projected_gradient(x_out, g_out, lower))) <= tolerance(f_out, gtol)
    return QuasiNewtonState(x_out, f_out, g_out, Binv, s.iterations + 1, small | ~improved)


def minimize_then_polish(fun: Callable, x0, lower, args=(), max_iter: int = 200, gtol: float = 1e-10,
                         max_step: float = 0.5) -> NewtonState:
    """Projected BFGS with exact gradients (started from the exact Hessian at x0, made positive definite)
    to near the optimum, then exact-Hessian Newton (`minimize`) to
    finish and to check second-order conditions. For objectives whose Hessian costs many gradients
    (a large dense Cholesky factor), this needs far fewer Hessians than Newton from the start: BFGS
    runs to the same tolerance, so Newton usually confirms convergence with one Hessian."""
    x0 = jnp.maximum(x0, lower)
    g0, H0 = gradient_and_hessian(fun, x0, args)
    w, V = jnp.linalg.eigh(H0)
    Binv0 = V @ jnp.diag(1.0 / jnp.maximum(jnp.abs(w), 1e-8 * jnp.max(jnp.abs(w)) + 1e-300)) @ V.T
    state = QuasiNewtonState(x0, fun(x0, *args), g0, Binv0, jnp.zeros((), jnp.int32), jnp.zeros((), bool))
    state = jax.lax.while_loop(lambda s: (s.iterations < max_iter) & ~s.done,
                               lambda s: _bfgs_step(fun, s, lower, args, gtol, max_step), state)
    polished = minimize(fun, state.x, lower, args, max_iter=max_iter, gtol=gtol, max_step=max_step)
    return polished._replace(iterations=polished.iterations + state.iterations)


def verified(state, stall_tol: float = STALL_TOL):
    """Whether a final state is a verified local minimum: the strict test passed (projected gradient within
    tolerance, free Hessian positive semi-definite), or no step could decrease f at machine precision at a
    point with no significant negative curvature whose Newton decrement is within `stall_tol`·max(1, |f|)."""
    flat = state.stalled & state.convex & (state.decrement <= tolerance(state.f, stall_tol))
    return state.converged | flat


def summarize(state: NewtonState, method: str = OptSummary.method) -> OptSummary:
    """Turn a final state (its `converged` already `verified`) into a record."""
    f = float(state.f)
    grad_norm = float(state.grad_norm)
    iterations = int(state.iterations)
    if bool(state.converged):
        message = "converged (no further decrease at machine precision)" if bool(state.stalled) else "converged"
        return OptSummary(True, iterations, grad_norm, f, message, method)
    if not bool(state.stalled):
        reason = "iteration limit reached"
    elif not bool(state.convex):
        reason = "stopped at a saddle point (the Hessian has negative curvature and no step decreased the objective)"
    else:
        reason = "no step decreased the objective before the gradient met the tolerance"
    return OptSummary(False, iterations, grad_norm, f, f"NOT converged: {reason}", method)


def as_numpy(state: NewtonState) -> NewtonState:
    return NewtonState(*(np.asarray(v) for v in state))


# ---- many problems at once -------------------------------------------------------------------
# A vmapped while_loop runs every problem until the slowest one stops (BATCHING.md point 1), and
# stages of ever smaller gathered batches compile the step once per stage. `minimize_queue` instead
# keeps a fixed number of slots busy: each loop iteration takes one Newton step in every slot, writes
# out the problems that finished and refills their slots from a queue, so the step compiles once and
# no slot waits for a straggler while problems remain.


def batch_newton_steps(fun: Callable, derivs: Callable, slots: NewtonState, lower, args, active, gtol: float,
                       max_step: float) -> NewtonState:
    """One projected Newton step for every slot (leading axis); `derivs(x, *args)` gives (f, ∇f, ∇²f).

    The same step as a single fit's `newton_step` (its trial points, and the first of them in ladder
    order that decreases f), so a batched fit follows the path of `minimize` and lands on the same
    optimum when there are several. The derivatives come first; a point with a small projected
    gradient and no negative curvature is marked converged and stays. Trials are evaluated in
    stages, each only for the slots that need it: the full Newton step (all); the rest of the ladder
    (where the full step did not decrease f); the escapes along negative curvature (where the ladder
    found no decrease and the curvature is negative). A stage needed by few slots gathers them.
    Near the optimum the criterion is flat to rounding: a tiny full Newton step, or one where no trial
    decreases f (with no negative curvature), that does not raise f beyond rounding is taken and the
    problem stops there (stalled; `verified` counts it converged when its Newton decrement is small),
    and a decrease must exceed rounding (1e-14 relative) to count, so noise cannot keep a problem going.
    """
    n_ladder = len(STEP_LADDER)

    def prepare(s, a):
        f, g, H = derivs(s.x, *a)
        grad_norm = jnp.max(jnp.abs(projected_gradient(s.x, g, lower)))
        tol = tolerance(f, gtol)
        trials, convex, nearly_convex, decrement = _trial_points(s.x, g, H, lower, max_step, tol)
        small = (grad_norm <= tol) & convex & jnp.isfinite(f)
        return f, grad_norm, trials, (convex, nearly_convex), decrement, small

    def evaluate(trials, args):
        values = jax.vmap(lambda ts, a: jax.vmap(lambda t: fun(t, *a))(ts))(trials, args)
        return jnp.where(jnp.isfinite(values), values, jnp.inf)

    K = slots.x.shape[0]
    few = max(K // 8, 1)

    def evaluate_where(mask, trials):
        """Trial values where `mask` (inf elsewhere): skipped when no slot needs them; when at most K/8
        do (the usual case), only those slots are gathered and evaluated."""
        def none(trials):
            return jnp.full(trials.shape[:2], jnp.inf, trials.dtype)

        def some(trials):
            idx = jnp.nonzero(mask, size=few, fill_value=K)[0]
            sub = jax.tree_util.tree_map(lambda a: jnp.take(a, idx, axis=0, mode="clip"), (trials, args))
            return none(trials).at[idx].set(evaluate(*sub), mode="drop")

        def all_(trials):
            return jnp.where(mask[:, None], evaluate(trials, args), jnp.inf)

        count = jnp.sum(mask)
        return jax.lax.switch(jnp.where(count == 0, 0, jnp.where(count <= few, 1, 2)), (none, some, all_), trials)

    f, grad_norm, trials, convex, decrement, small = jax.vmap(prepare)(slots, args)
    scale = jnp.maximum(1.0, jnp.abs(f))
    threshold = (f - 1e-14 * scale)[:, None]
    f_full = evaluate(trials[:, :1], args)
    # the rest of the ladder only matters where the full step does not decrease f
    short = active & ~small & ~(f_full[:, 0] < threshold[:, 0])
    f_rest = evaluate_where(short, trials[:, 1:n_ladder])
    f_ladder = jnp.concatenate([f_full, f_rest], axis=1)
    escapes = trials[:, n_ladder:]
    need = active & ~small & ~jnp.any(f_ladder < threshold, axis=1) \
        & jnp.any(escapes != slots.x[:, None, :], axis=(1, 2))
    f_escape = evaluate_where(need, escapes)

    def finish(s, f, grad_norm, trials, convex, decrement, small, f_trials):
        x = s.x
        scale = jnp.maximum(1.0, jnp.abs(f))
        decrease = f_trials < f - 1e-14 * scale
        first = jnp.argmax(decrease)
        tiny = jnp.max(jnp.abs(trials[0] - x)) <= 1e-7 * (1.0 + jnp.max(jnp.abs(x)))
        # at a saddle the step is tiny too: there the escapes must be tried; a nearly convex point only
        # stops where no trial (escapes included) decreases f
        convex, nearly_convex = convex
        final = ~small & ((convex & tiny) | (nearly_convex & ~jnp.any(decrease)))
        flat = final & (f_trials[0] <= f + 1e-12 * scale)
        improved = decrease[first] & ~small & ~final
        x_new = jnp.where(improved, trials[first], jnp.where(flat, trials[0], x))
        f_new = jnp.where(improved, f_trials[first], jnp.where(flat, f_trials[0], f))
        return NewtonState(x_new, f_new, grad_norm, s.iterations + 1, small, ~small & ~improved, nearly_convex,
                           decrement)

    return jax.vmap(finish)(slots, f, grad_norm, trials, convex, decrement, small,
                            jnp.concatenate([f_ladder, f_escape], axis=1))


def minimize_queue(fun: Callable, derivs: Callable, x0, lower, data, make_args: Callable, n_valid,
                   width: int, max_iter: int = 200, gtol: float = 1e-10, max_step: float = 0.5) -> NewtonState:
    """Minimise fun(x, *make_args(data_j)) over x ≥ lower, from x0, for problems j < n_valid.

    `data` is a pytree with leading axis N (problems j ≥ n_valid are never loaded). `width` slots
    step together; a finished problem (converged, stalled or at max_iter) is written out and its
    slot refilled with the next problem in the queue. Returns the final NewtonState of every problem
    (leading axis N; problems never loaded keep x0 and are not converged). One jit-compilable
    program: fixed shapes, no host round trips.
    """
    N = jax.tree_util.tree_leaves(data)[0].shape[0]
    K = min(width, N)
    x0 = jnp.maximum(x0, lower)

    def take(idx):
        return jax.tree_util.tree_map(lambda a: jnp.take(a, idx, axis=0, mode="clip"), data)

    blank = _blank_states(x0, K)
    out = _blank_states(x0, N)
    slot_idx = jnp.arange(K, dtype=jnp.int32)
    valid = slot_idx < n_valid
    start = (slot_idx, valid, jnp.minimum(K, n_valid).astype(jnp.int32), blank, take(slot_idx), out)

    # make_args runs inside the per-slot vmap, so what it shares between problems (a target's ZᵀZ, its
    # cross-tabulation) stays one unbatched array: products with it are one matrix product for all slots
    def slot_fun(x, b):
        return fun(x, *make_args(b))

    def slot_derivs(x, b):
        return derivs(x, *make_args(b))

    def body(c):
        idx, valid, next_j, slots, args, out = c
        new = batch_newton_steps(slot_fun, slot_derivs, slots, lower, (args,), valid, gtol, max_step)
        slots = jax.tree_util.tree_map(lambda a, o: jnp.where(_expand(valid, a), a, o), new, slots)
        done = valid & (slots.converged | slots.stalled | (slots.iterations >= max_iter))
        target = jnp.where(done, idx, N)
        out = jax.tree_util.tree_map(lambda o, a: o.at[target].set(a, mode="drop"), out, slots)
        rank = jnp.cumsum(done) - 1
        candidate = (next_j + rank).astype(jnp.int32)
        refill = done & (candidate < n_valid)
        idx = jnp.where(refill, candidate, idx)
        valid = (valid & ~done) | refill
        next_j = jnp.minimum(next_j + jnp.sum(done), n_valid).astype(jnp.int32)
        slots = jax.tree_util.tree_map(lambda a, b: jnp.where(_expand(refill, a), b, a), slots, blank)
        loaded = take(idx)
        args = jax.tree_util.tree_map(lambda a, b: jnp.where(_expand(refill, a), b, a), args, loaded)
        return idx, valid, next_j, slots, args, out

    return jax.lax.while_loop(lambda c: jnp.any(c[1]), body, start)[5]


def _blank_states(x0, count: int) -> NewtonState:
    """`count` problems at x0 that have not started (f and the last derivatives' summaries unknown)."""
    inf = jnp.full((count,), jnp.inf, x0.dtype)
    false = jnp.zeros((count,), bool)
    return NewtonState(jnp.broadcast_to(x0, (count,) + x0.shape), inf, inf, jnp.zeros((count,), jnp.int32), false,
                       false, false, inf)


def _expand(mask, a):
    return mask.reshape(mask.shape + (1,) * (a.ndim - 1))


def batch_converged(s: NewtonState) -> jax.Array:
    """`verified` per problem of a batch (its tests are elementwise, so any leading axes work)."""
    return verified(s)
