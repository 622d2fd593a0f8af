"""The Laplace approximation to a mixed model's marginal log-likelihood, as pure JAX functions.

Random effects b = Λu with u ~ N(0, I). For data y with conditional log-density ℓ(b) = log p(y | b),

    log L ≈ ℓ(Λû) − ½|û|² − ½ log|I + ΛᵀCΛ|,   û = argmax_u h(u),  h(u) = ℓ(Λu) − ½|u|²,

with C the curvature −∇²ℓ at the mode (or its expectation: lme4 uses the PIRLS weights). Two layouts:

- `GroupedModel`: effects independent over the groups of one factor. ℓ is a sum over groups of a
  group's log-density given its b_g (q values), from its padded tensors; the inner Newton runs over
  all groups at once (one q × q system each). This is the interface for user-written models.
- `RowModel`: several grouping factors (crossed or nested). ℓ is a sum over rows of a function of the
  row's random part (ZΛu)_i; the joint system over every factor's effects is blocked: the first
  factor's levels are block diagonal, the other factors form a dense part (its Schur complement).

û is found by a damped Newton (Fisher-scoring with C) iteration; derivatives with respect to the
parameters are by implicit differentiation at the mode (`custom_jvp`: dû = H⁻¹ ∂_φ∇_u h dφ), never by
differentiating the inner loop, so outer gradients and Hessians are exact and cheap.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp

from ..likelihood import linalg

INNER_MAX_ITER = 60
INNER_TOL = 1e-11          # stop after a step this small (relative): Fisher scoring converges linearly
INNER_TOL_NEWTON = 1e-7    # ... or this small when the curvature is exact (Newton: the next error is ~ step²)
HALVINGS = 30


# ---- one grouping factor: per-group tensors ---------------------------------------------------

@dataclass(frozen=True)
class GroupedModel:
    """A model whose random effects are independent over groups. Subclass it (a frozen dataclass, so
    that it is hashable and compiled programs are reused) and define `logdens`; `curvature` defaults
    to the exact −∇²_b logdens."""

    def logdens(self, params, data, b):
        """log p(rows of one group | b): params (any pytree), data (the group's padded tensors and
        mask, leading group axis removed), b (q,) the group's random effects."""
        raise NotImplementedError

    def curvature(self, params, data, b):
        """A positive semi-definite q × q curvature of −logdens in b (the Laplace log-determinant's)."""
        return -jax.hessian(self.logdens, argnums=2)(params, data, b)


def _group_h(model: GroupedModel, u, params, lam, data):
    return model.logdens(params, data, lam @ u) - 0.5 * u @ u


def _group_newton(model: GroupedModel, params, lam, data):
    """Modes û (G, q) of one bucket of groups: Fisher-scoring steps with step halving, all groups at once."""
    G = jax.tree_util.tree_leaves(data)[0].shape[0]
    q = lam.shape[0]
    h = jax.vmap(partial(_group_h, model), (0, None, None, 0))
    grad_h = jax.vmap(jax.grad(partial(_group_h, model)), (0, None, None, 0))
    curv = jax.vmap(model.curvature, (None, 0, 0))

    def direction(u):
        C = curv(params, data, u @ lam.T)
        H = jnp.eye(q) + lam.T @ C @ lam
        L = linalg.cholesky(H)
        g = grad_h(u, params, lam, data)
        return linalg.solve_upper_t(L, linalg.solve_lower(L, g[..., None]))[..., 0]

    def step(c):
        u, h_u, _, it = c
        d = direction(u)

        def halve(s):
            alpha, h_new, k = s
            worse = ~(h_new >= h_u - 1e-12 * jnp.abs(h_u))
            alpha = jnp.where(worse, 0.5 * alpha, alpha)
            return alpha, jnp.where(worse, h(u + alpha[:, None] * d, params, lam, data), h_new), k + 1

        def still_worse(s):
            alpha, h_new, k = s
            return (k < HALVINGS) & jnp.any(~(h_new >= h_u - 1e-12 * jnp.abs(h_u)))

        alpha0 = jnp.ones(G, u.dtype)
        alpha, h_new, _ = jax.lax.while_loop(still_worse, halve, (alpha0, h(u + d, params, lam, data), 0))
        ok = h_new >= h_u - 1e-12 * jnp.abs(h_u)
        u_new = jnp.where(ok[:, None], u + alpha[:, None] * d, u)
        size = jnp.max(jnp.where(ok[:, None], jnp.abs(alpha[:, None] * d), 0.0))
        return u_new, jnp.where(ok, h_new, h_u), size, it + 1

    def going(c):
        u, _, size, it = c
        return (it < INNER_MAX_ITER) & (size > INNER_TOL * (1.0 + jnp.max(jnp.abs(u))))

    u0 = jnp.zeros((G, q), lam.dtype)
    start = (u0, h(u0, params, lam, data), jnp.asarray(jnp.inf, lam.dtype), 0)
    return jax.lax.while_loop(going, step, start)[0]


@partial(jax.custom_jvp, nondiff_argnums=(0,))
def group_modes(model: GroupedModel, params, lam, data):
    """Conditional modes û (G, q) of every group of one bucket, differentiable in (params, Λ)."""
    return _group_newton(model, params, lam, data)


@group_modes.defjvp
def _group_modes_jvp(model, primals, tangents):
    params, lam, data = primals
    d_params, d_lam, _ = tangents
    u = group_modes(model, params, lam, data)
    grad_u = jax.grad(partial(_group_h, model))

    def gradient(p, l):
        return jax.vmap(grad_u, (0, None, None, 0))(u, p, l, data)

    _, dg = jax.jvp(gradient, (params, lam), (d_params, d_lam))
    H = -jax.vmap(jax.hessian(partial(_group_h, model)), (0, None, None, 0))(u, params, lam, data)
    return u, jnp.linalg.solve(H, dg[..., None])[..., 0]


def grouped_loglik(model: GroupedModel, params, lam, buckets) -> jax.Array:
    """Laplace log-likelihood Σ_g [ℓ_g(Λû_g) − ½|û_g|² − ½ log|I + ΛᵀC_gΛ|] over every bucket's groups.
    `buckets` is a sequence of pytrees, each with a leading group axis (groups padded to one length)."""
    total = jnp.zeros((), lam.dtype)
    for data in buckets:
        total = total + jnp.sum(group_terms(model, params, lam, data)[0])
    return total


def group_terms(model: GroupedModel, params, lam, data):
    """Per group of one bucket: (Laplace log-likelihood term, û, H = I + ΛᵀCΛ)."""
    u = group_modes(model, params, lam, data)
    b = u @ lam.T
    ll = jax.vmap(model.logdens, (None, 0, 0))(params, data, b)
    C = jax.vmap(model.curvature, (None, 0, 0))(params, data, b)
    H = jnp.eye(lam.shape[0]) + lam.T @ C @ lam
    logdet = 2.0 * linalg.log_diag_sum(linalg.cholesky(H))
    return ll - 0.5 * jnp.sum(u * u, axis=-1) - 0.5 * logdet, u, H


# ---- several grouping factors: rows and a blocked joint system --------------------------------

@dataclass(frozen=True)
class RowModel:
    """A model whose log-density is a sum over rows of a function of the row's random part z = (ZΛu)_i."""

    def logdens_rows(self, params, rows, z):
        """Per-row log-density (n,) given the random part z (n,) of the linear predictor."""
        raise NotImplementedError

    @property
    def exact_curvature(self) -> bool:
        """Whether `curvature_rows` is the exact −∂²ℓ/∂z² (then the inner iteration is Newton's)."""
        return type(self).curvature_rows is RowModel.curvature_rows

    def curvature_rows(self, params, rows, z):
        """Per-row curvature −∂²/∂z² of `logdens_rows` (n,), or its expectation (PIRLS weights)."""
        return exact_curvature_rows(self, params, rows, z)


def exact_curvature_rows(model: RowModel, params, rows, z):
    """−∂²ℓ_i/∂z_i² per row (the rows are separable, so one JVP of the gradient gives the diagonal)."""
    score = jax.grad(lambda zz: jnp.sum(model.logdens_rows(params, rows, zz)))
    return -jax.jvp(score, (z,), (jnp.ones_like(z),))[1]


@jax.tree_util.register_dataclass
@dataclass(frozen=True)
class RandomRows:
    """Where each row's random effects sit in u = (u₁, u₂).

    code1 (n,): the row's level of the first factor (block diagonal, G1 levels × q₁); z1 (n, q₁) its Z row.
    idx2 (n, m₂): positions in the dense part u₂ (size Q₂) of the other factors' effects; z2 (n, m₂)
    their Z rows. `splits` gives, per other factor, its columns (start, q_k) in z2.
    """

    code1: jax.Array
    z1: jax.Array
    idx2: jax.Array
    z2: jax.Array
    G1: int = field(metadata=dict(static=True))
    Q2: int = field(metadata=dict(static=True))
    splits: tuple = field(metadata=dict(static=True))


def _loadings(rr: RandomRows, lams):
    """Coefficients of u in each row's random part: a1 = z1Λ₁ (n, q₁) and a2 = z2 Λ_k per factor (n, m₂)."""
    a1 = rr.z1 @ lams[0]
    parts = [rr.z2[:, s:s + q] @ lam for (s, q), lam in zip(rr.splits, lams[1:])]
    a2 = jnp.concatenate(parts, axis=1) if parts else rr.z2
    return a1, a2


def _random_part(rr: RandomRows, a1, a2, u1, u2):
    z = jnp.einsum("nq,nq->n", a1, u1[rr.code1])
    return z + jnp.sum(a2 * u2[rr.idx2], axis=1) if rr.Q2 else z


def _row_h(model: RowModel, u, params, lams, rows, rr: RandomRows):
    u1, u2 = u
    a1, a2 = _loadings(rr, lams)
    z = _random_part(rr, a1, a2, u1, u2)
    return jnp.sum(model.logdens_rows(params, rows, z)) - 0.5 * jnp.sum(u1 * u1) - 0.5 * jnp.sum(u2 * u2)


class Blocked(NamedTuple):
    """H = [[D, B], [Bᵀ, A₂₂]] with D (G1, q₁, q₁) block diagonal, factored: L_D, D⁻¹B, the Schur
    complement S = A₂₂ − BᵀD⁻¹B and its factor L_S (computed without derivatives: see `schur_solve`)."""

    LD: jax.Array
    DinvB: jax.Array
    B: jax.Array
    S: jax.Array
    LS: jax.Array


def _blocked_system(rr: RandomRows, a1, a2, c) -> Blocked:
    """I + ΛᵀZᵀdiag(c)ZΛ in blocks, from the rows' loadings and curvatures, and its factors."""
    q1 = a1.shape[1]
    D = jnp.eye(q1) + jnp.zeros((rr.G1, q1, q1)).at[rr.code1].add(c[:, None, None] * a1[:, :, None] * a1[:, None, :])
    LD = linalg.cholesky(D)
    if not rr.Q2:
        empty = jnp.zeros((0, 0))
        return Blocked(LD, jnp.zeros((rr.G1, q1, 0)), jnp.zeros((rr.G1, q1, 0)), empty, empty)
    ca1 = c[:, None] * a1
    B = jnp.zeros((rr.G1, q1, rr.Q2)).at[rr.code1[:, None, None], jnp.arange(q1)[None, :, None],
                                          rr.idx2[:, None, :]].add(ca1[:, :, None] * a2[:, None, :])
    flat = (rr.idx2[:, :, None] * rr.Q2 + rr.idx2[:, None, :]).reshape(-1)
    A22 = jnp.eye(rr.Q2) + jnp.zeros(rr.Q2 * rr.Q2).at[flat].add(
        (c[:, None, None] * a2[:, :, None] * a2[:, None, :]).reshape(-1)).reshape(rr.Q2, rr.Q2)
    DinvB = linalg.solve_upper_t(LD, linalg.solve_lower(LD, B))
    S = A22 - jnp.einsum("gqi,gqj->ij", B, DinvB)
    return Blocked(LD, DinvB, B, S, jnp.linalg.cholesky(jax.lax.stop_gradient(S)))


def schur_solve(H: Blocked, r):
    """S⁻¹ r (r: (Q₂,) or (Q₂, m)) through the factor L_S, differentiated as a linear solve (dx = −S⁻¹ dS x:
    matrix products), never through the Cholesky factorisation, whose derivative rules are slow."""
    return jax.lax.custom_linear_solve(lambda v: H.S @ v, r, lambda _, b: jax.scipy.linalg.cho_solve((H.LS, True), b),
                                       symmetric=True)


@jax.custom_jvp
def _schur_logdet(S, LS):
    return 2.0 * linalg.log_diag_sum(LS)


@_schur_logdet.defjvp
def _schur_logdet_jvp(primals, tangents):
    """d log|S| = tr(S⁻¹ dS), with S⁻¹ from `schur_solve` (so second derivatives are products too)."""
    S, LS = primals
    H = Blocked(None, None, None, S, LS)
    return _schur_logdet(S, LS), jnp.sum(schur_solve(H, jnp.eye(S.shape[0], dtype=S.dtype)) * tangents[0])


def _blocked_solve(H: Blocked, r1, r2):
    """H⁻¹ (r1, r2) for r1 (G1, q₁), r2 (Q₂,) by block elimination."""
    y1 = linalg.solve_upper_t(H.LD, linalg.solve_lower(H.LD, r1[..., None]))[..., 0]
    if not r2.shape[0]:
        return y1, r2
    x2 = schur_solve(H, r2 - jnp.einsum("gqi,gq->i", H.B, y1))
    return y1 - jnp.einsum("gqi,i->gq", H.DinvB, x2), x2


def _blocked_logdet(H: Blocked):
    schur = _schur_logdet(H.S, H.LS) if H.S.shape[0] else 0.0
    return 2.0 * jnp.sum(linalg.log_diag_sum(H.LD)) + schur


def _row_gradient(model, u, params, lams, rows, rr):
    return jax.grad(partial(_row_h, model))(u, params, lams, rows, rr)


def _row_newton(model: RowModel, params, lams, rows, rr: RandomRows, u0):
    """The joint mode (u₁, u₂) from u0: Fisher-scoring steps (curvature_rows) with step halving."""
    a1, a2 = _loadings(rr, lams)
    h = partial(_row_h, model)

    def direction(u):
        z = _random_part(rr, a1, a2, *u)
        H = _blocked_system(rr, a1, a2, model.curvature_rows(params, rows, z))
        return _blocked_solve(H, *_row_gradient(model, u, params, lams, rows, rr))

    def step(c):
        u, h_u, _, it = c
        d = direction(u)

        def halve(s):
            alpha, _, k = s
            alpha = 0.5 * alpha
            return alpha, h(_axpy(alpha, d, u), params, lams, rows, rr), k + 1

        def still_worse(s):
            _, h_new, k = s
            return (k < HALVINGS) & ~(h_new >= h_u - 1e-12 * jnp.abs(h_u))

        one = jnp.ones((), lams[0].dtype)
        alpha, h_new, _ = jax.lax.while_loop(still_worse, halve, (one, h(_axpy(one, d, u), params, lams, rows, rr), 0))
        ok = h_new >= h_u - 1e-12 * jnp.abs(h_u)
        u_new = jax.tree_util.tree_map(lambda a, b: jnp.where(ok, a, b), _axpy(alpha, d, u), u)
        size = jnp.where(ok, alpha * _max_abs(d), 0.0)
        return u_new, jnp.where(ok, h_new, h_u), size, it + 1

    tol = INNER_TOL_NEWTON if model.exact_curvature else INNER_TOL

    def going(c):
        u, _, size, it = c
        scale = 1.0 + _max_abs(u)
        return (it < INNER_MAX_ITER) & (size > tol * scale)

    start = (u0, h(u0, params, lams, rows, rr), jnp.asarray(jnp.inf, a1.dtype), 0)
    return jax.lax.while_loop(going, step, start)[0]


def _max_abs(u):
    return jnp.max(jnp.stack([jnp.max(jnp.abs(x), initial=0.0) for x in u]))


def _axpy(alpha, d, u):
    return jax.tree_util.tree_map(lambda di, ui: ui + alpha * di, d, u)


def zero_modes(rr: RandomRows, lams):
    """u = 0, where the inner iteration starts without a better guess."""
    return jnp.zeros((rr.G1, lams[0].shape[0]), lams[0].dtype), jnp.zeros((rr.Q2,), lams[0].dtype)


def row_modes(model: RowModel, params, lams, rows, rr: RandomRows, u0=None):
    """The joint conditional mode (u₁ (G1, q₁), u₂ (Q₂,)), differentiable in (params, Λ's); the inner
    iteration starts from u0 (e.g. the modes at a nearby x), which changes where it starts, not the mode."""
    u0 = zero_modes(rr, lams) if u0 is None else jax.lax.stop_gradient(u0)
    return _row_modes(model, params, lams, rows, rr, u0)


@partial(jax.custom_jvp, nondiff_argnums=(0,))
def _row_modes(model: RowModel, params, lams, rows, rr: RandomRows, u0):
    return _row_newton(model, params, lams, rows, rr, u0)


@_row_modes.defjvp
def _row_modes_jvp(model, primals, tangents):
    params, lams, rows, rr, u0 = primals
    d_params, d_lams = tangents[:2]
    u = _row_modes(model, params, lams, rows, rr, u0)
    _, dg = jax.jvp(lambda p, l: _row_gradient(model, u, p, l, rows, rr), (params, lams), (d_params, d_lams))
    a1, a2 = _loadings(rr, lams)
    c = exact_curvature_rows(model, params, rows, _random_part(rr, a1, a2, *u))
    return u, _blocked_solve(_blocked_system(rr, a1, a2, c), *dg)


def row_terms(model: RowModel, params, lams, rows, rr: RandomRows, u0=None):
    """(Laplace log-likelihood, (û₁, û₂), the blocked H at the mode with the model's curvature)."""
    u = row_modes(model, params, lams, rows, rr, u0)
    a1, a2 = _loadings(rr, lams)
    z = _random_part(rr, a1, a2, *u)
    H = _blocked_system(rr, a1, a2, model.curvature_rows(params, rows, z))
    ll = jnp.sum(model.logdens_rows(params, rows, z)) - 0.5 * sum(jnp.sum(x * x) for x in u)
    return ll - 0.5 * _blocked_logdet(H), u, H


def row_loglik(model: RowModel, params, lams, rows, rr: RandomRows, u0=None) -> jax.Array:
    """Laplace log-likelihood over every factor's effects jointly (the inner iteration starts from u0)."""
    return row_terms(model, params, lams, rows, rr, u0)[0]


def conditional_covariances(H: Blocked):
    """cov(u | y) in the Laplace approximation, H⁻¹: its first-factor blocks (G1, q₁, q₁) and its dense
    part (Q₂, Q₂)."""
    q1 = H.LD.shape[-1]
    Dinv = linalg.solve_upper_t(H.LD, linalg.solve_lower(H.LD, jnp.broadcast_to(jnp.eye(q1), H.LD.shape)))
    if not H.LS.shape[0]:
        return Dinv, jnp.zeros((0, 0))
    Sinv = schur_solve(H, jnp.eye(H.LS.shape[0]))
    first = Dinv + jnp.einsum("gqi,ij,grj->gqr", H.DinvB, Sinv, H.DinvB)
    return first, Sinv
