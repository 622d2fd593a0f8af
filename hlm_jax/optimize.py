"""Bound-constrained Newton minimisation with exact derivatives: one step for single fits and batches.

One step (`newton_step`): derivatives at the point and the trial points (`prepare`: variables at their lower
bound with the gradient pushing outwards are held; the free variables' Hessian is made positive definite by
taking absolute eigenvalues; the step is capped at `max_step` per coordinate; the trials are a ladder of step
lengths along it and short moves along a direction of negative curvature, to leave saddle points), then the
trial search, which is a parameter (a single fit evaluates the trials in order and stops at the first decrease,
`first_decrease`; a batch evaluates them in stages across its slots, `staged`), then one acceptance rule
(`finish`). Single fits run the step in a while loop (`minimize`); batches run the same step under vmap in the
slot queue (`minimize_queue`), so a batched fit follows a single fit's path.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

STEP_LADDER = (1.0, 0.5, 0.25, 0.1, 0.03, 0.01, 1e-3, 1e-4)
STALL_TOL = 1e-10
ESCAPE_STEPS = (0.3, 0.03, 0.003)
DECREASE = 1e-14   # a trial decreases f when it is below f by more than this, relative to max(1, |f|)
ROUNDING = 1e-12   # f's rounding, relative to max(1, |f|): a step predicted to decrease f by less is flat


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


class Trials(NamedTuple):
    """What one step knows at its point before any trial is evaluated (`prepare`), for the trial search and
    `finish`: f, the projected |∇f|∞, the trial points (the ladder, then the escapes), how many of them are
    worth evaluating in order (`limit`: 0 at a verified point, 1 where the step is flat to rounding, the ladder
    alone where there is no negative curvature to escape along), the value a trial must beat (`threshold`)
    and the curvature summaries (`_trial_points`)."""

    f: jax.Array
    grad_norm: jax.Array
    points: jax.Array
    limit: jax.Array
    threshold: jax.Array
    small: jax.Array
    stop: jax.Array
    convex: jax.Array
    nearly_convex: jax.Array
    decrement: jax.Array


def prepare(derivs: Callable, x, args, lower, gtol: float, max_step: float) -> Trials:
    """The derivatives at x (`derivs(x, *args)` gives (f, ∇f, ∇²f)) and the step's trials.

    A point with a small projected gradient and no negative curvature is verified (`small`: nothing to try).
    Near the optimum the criterion is flat to rounding: where the Newton step is tiny or its predicted
    decrease (the Newton decrement) is below f's rounding, and there is no negative curvature, only the full
    step is tried (`stop`; `finish` takes it unless it raises f beyond rounding, and the run ends there).
    A decrease must exceed rounding (`DECREASE` relative) to count, so noise cannot keep a run going."""
    f, g, H = derivs(x, *args)
    grad_norm = jnp.max(jnp.abs(projected_gradient(x, g, lower)))
    tol = tolerance(f, gtol)
    points, convex, nearly_convex, decrement = _trial_points(x, g, H, lower, max_step, tol)
    scale = jnp.maximum(1.0, jnp.abs(f))
    small = (grad_norm <= tol) & convex & jnp.isfinite(f)
    tiny = jnp.max(jnp.abs(points[0] - x)) <= 1e-7 * (1.0 + jnp.max(jnp.abs(x)))
    stop = ~small & convex & (tiny | (decrement <= ROUNDING * scale))
    n_ladder = len(STEP_LADDER)
    escapes = jnp.any(points[n_ladder:] != x)
    limit = jnp.where(small, 0, jnp.where(stop, 1, jnp.where(escapes, points.shape[0], n_ladder)))
    threshold = jnp.where(jnp.isfinite(f), f - DECREASE * scale, jnp.inf)
    return Trials(f, grad_norm, points, limit, threshold, small, stop, convex, nearly_convex, decrement)


def first_decrease(fun: Callable, trials: Trials, args) -> jax.Array:
    """The trial search of a single fit: evaluate the trials in order, at most `limit` of them, and stop at the
    first that beats the threshold (one evaluation, usually). Values of trials not evaluated are inf."""

    def going(c):
        i, found, _ = c
        return (i < trials.limit) & ~found

    def evaluate(c):
        i, _, values = c
        value = fun(trials.points[i], *args)
        value = jnp.where(jnp.isfinite(value), value, jnp.inf)
        return i + 1, value < trials.threshold, values.at[i].set(value)

    values = jnp.full(trials.points.shape[:1], jnp.inf, trials.points.dtype)
    return jax.lax.while_loop(going, evaluate, (0, jnp.zeros((), bool), values))[2]


def finish(state: NewtonState, trials: Trials, values) -> NewtonState:
    """The acceptance rule, one for single fits and batches: the first trial (in order) whose value beats the
    threshold is taken; where the step is flat to rounding, or no trial decreases f at a point with no
    significant negative curvature, the full Newton step is taken if it does not raise f beyond rounding and
    the run stops (stalled; `verified` decides whether that counts as converged); otherwise x stays and the run
    stops (a saddle the escapes could not leave, or no decrease)."""
    decrease = values < trials.threshold
    first = jnp.argmax(decrease)
    final = trials.stop | (~trials.small & trials.nearly_convex & ~jnp.any(decrease))
    flat = final & (values[0] <= trials.f + ROUNDING * jnp.maximum(1.0, jnp.abs(trials.f)))
    improved = decrease[first] & ~trials.small & ~final
    x = jnp.where(improved, trials.points[first], jnp.where(flat, trials.points[0], state.x))
    f = jnp.where(improved, values[first], jnp.where(flat, values[0], trials.f))
    return NewtonState(x, f, trials.grad_norm, state.iterations + 1, trials.small, ~trials.small & ~improved,
                       trials.nearly_convex, trials.decrement)


def newton_step(fun: Callable, derivs: Callable, state: NewtonState, lower, args, gtol: float, max_step: float,
                search: Callable = first_decrease, each: Callable = lambda step: step) -> NewtonState:
    """One safeguarded projected Newton step of `fun(x, *args)` from `state`, for a single fit or a batch:
    derivatives and trials (`prepare`), the trial search `search(fun, trials, args)` (`first_decrease` for a
    single fit; a batch's staged search over all its slots), then `finish`. A batch passes `each=jax.vmap`:
    state and args then have a leading axis of problems, and the per-problem parts are mapped over it."""
    trials = each(lambda s, a: prepare(derivs, s.x, a, lower, gtol, max_step))(state, args)
    return each(finish)(state, trials, search(fun, trials, args))


def initial_state(fun: Callable, x0, lower, args) -> NewtonState:
    """The state at x0 (projected onto the bounds) before any step."""
    x0 = jnp.maximum(x0, lower)
    false = jnp.zeros((), bool)
    inf = jnp.asarray(jnp.inf, x0.dtype)
    return NewtonState(x0, fun(x0, *args), inf, jnp.zeros((), jnp.int32), false, false, false, inf)


def minimize(fun: Callable, x0, lower, args=(), max_iter: int = 200, gtol: float = 1e-10,
             max_step: float = 0.5, derivs: Callable = gradient_and_hessian) -> NewtonState:
    """Minimise `fun(x, *args)` subject to x ≥ lower by `newton_step` with `first_decrease`; stops when the point
    is verified (projected gradient below gtol·max(1, |f|), no negative curvature), when no trial step
    decreases f or f is flat to rounding, or after max_iter steps. `converged` in the result is `verified`:
    first- and second-order conditions, bounds included. `derivs(fun, x, args)` gives (∇f, ∇²f) (default
    `gradient_and_hessian`; `forward_hessian` or a model's own where that is cheaper); f is the state's."""
    state = initial_state(fun, x0, lower, args)

    def keep_going(s):
        return (s.iterations < max_iter) & ~s.converged & ~s.stalled

    def step(s):
        return newton_step(fun, lambda x, *a: (s.f, *derivs(fun, x, a)), s, lower, args, gtol, max_step)

    state = jax.lax.while_loop(keep_going, step, state)
    return state._replace(converged=verified(state))


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


def staged(fun: Callable, trials: Trials, args, active) -> jax.Array:
    """The trial search of a batch (leading axis: slots; `active`: slots holding a problem), for `newton_step`.

    The same values as `first_decrease` where that evaluates (the first trial that beats the threshold is the
    same), found in stages, each only for the slots that need it: the full Newton step (all); the rest of the
    ladder (where the full step did not decrease f); the escapes along negative curvature (where the ladder
    found no decrease). Each loop turn evaluates one block of as many trials as there are slots (at least a
    stage's): a stage's trials for as many of the slots that need it as fit (all the full steps; the other
    trials of K/7 slots), until no slot needs a stage, so the criterion is traced once. Values of trials not
    evaluated are inf."""
    K, T = trials.points.shape[:2]
    n_ladder = len(STEP_LADDER)
    limit = jnp.where(active, trials.limit, 0)
    first = jnp.asarray([0, 1, n_ladder])            # each stage's trials: first, first + 1, ..., first + width - 1
    width = jnp.asarray([1, n_ladder - 1, T - n_ladder])
    pair = jnp.arange(max(K, n_ladder - 1, T - n_ladder))

    def need(c):
        """(K, 3): whether a slot needs a stage it has not had: its trials are within its limit and every
        earlier trial was evaluated without a decrease."""
        values, had = c
        failed = ~(values < trials.threshold[:, None])
        ladder_failed = had[:, 1] & jnp.all(failed[:, :n_ladder], axis=1)
        reached = jnp.stack([limit >= 1, (limit > 1) & had[:, 0] & failed[:, 0], (limit > n_ladder) & ladder_failed],
                            axis=1)
        return reached & ~had

    def evaluate(c):
        values, had = c
        needs = need(c)
        stage = jnp.argmax(jnp.any(needs, axis=0))
        per_block = pair.size // width[stage]
        slots = jnp.nonzero(needs[:, stage], size=pair.size, fill_value=K)[0]
        slot = jnp.where(pair < per_block * width[stage], slots[pair // width[stage]], K)
        trial = first[stage] + pair % width[stage]
        slot_args = jax.tree_util.tree_map(lambda a: jnp.take(a, slot, axis=0, mode="clip"), args)
        points = trials.points[jnp.minimum(slot, K - 1), trial]
        block = jax.vmap(lambda t, a: fun(t, *a))(points, slot_args)
        values = values.at[slot, trial].set(jnp.where(jnp.isfinite(block), block, jnp.inf), mode="drop")
        taken = jnp.where(pair < per_block, slots, K)
        return values, had.at[taken, stage].set(True, mode="drop")

    start = (jnp.full((K, T), jnp.inf, trials.points.dtype), jnp.zeros((K, 3), bool))
    return jax.lax.while_loop(lambda c: jnp.any(need(c)), evaluate, start)[0]


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
        new = newton_step(slot_fun, slot_derivs, slots, lower, (args,), gtol, max_step,
                          search=partial(staged, active=valid), each=jax.vmap)
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
    """`mask` (leading axes of `a`) shaped to broadcast against `a`."""
    return mask.reshape(mask.shape + (1,) * (a.ndim - 1))


def batch_converged(s: NewtonState) -> jax.Array:
    """`verified` per problem of a batch (its tests are elementwise, so any leading axes work)."""
    return verified(s)
