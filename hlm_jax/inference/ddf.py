"""Denominator degrees of freedom for t tests of fixed effects: Satterthwaite and Kenward-Roger.

Satterthwaite, as lmerTest (Kuznetsova et al. 2017): the variance parameters are
varpar = (θ, σ); A = 2 H⁻¹ with H the Hessian of the REML (or ML) deviance as a
function of varpar (σ not profiled out), V(varpar) = σ²(R_X R_Xᵀ)⁻¹ the covariance of β̂,
and for a contrast c

    df = 2 (cᵀVc)² / (gᵀ A g),   g_k = ∂(cᵀVc)/∂varpar_k.

lmerTest takes H and ∂V/∂varpar by finite differences (numDeriv); here both are exact: H from the
profiled criterion's closed-form derivatives (`unprofiled.deviance_derivatives`) and ∂V/∂varpar by forward
mode through the per-group sums (autodiff through the decomposition where those forms do not apply).

Kenward-Roger, as pbkrtest (Halekoh & Højsgaard 2014): the variance parameters are
γ = (the covariance entries of each random term, σ²), with V = Σ_i γ_i G_i linear in γ.
pbkrtest forms V⁻¹ (n × n) and the products P_i = -XᵀV⁻¹G_iV⁻¹X, Q_ij =
XᵀV⁻¹G_iV⁻¹G_jV⁻¹X and tr(V⁻¹G_iV⁻¹G_j). Because V is linear in γ these are derivatives:

    P_i = ∂(XᵀV⁻¹X)/∂γ_i,       Q_ij + Q_ji = ∂²(XᵀV⁻¹X)/∂γ_i∂γ_j,
    IE2 = -∂²[log|V| + log|XᵀV⁻¹X|]/∂γ∂γᵀ   (twice the expected REML information),

so they are computed here by forward-mode autodiff of two small functions of γ, XᵀV⁻¹X and log|V|,
written in Z-space (never an n × n matrix) with the push-through identity

    V⁻¹ = σ⁻²[I − Z D (σ²I + ZᵀZ D)⁻¹ Zᵀ],   |V| = σ^{2(n−m)} |σ²I + ZᵀZ D|,

which stays smooth when the random-effects covariance D is singular. Then, as pbkrtest,
W = 2 IE2⁻¹, Φ_A = Φ + 2Φ[Σ_ij W_ij (Q_ij − P_iΦP_j)]Φ, and the df of a contrast L
follow pbkrtest's Lb_ddf.
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from ..compile_time import ONCE, Program
from ..design import NotYetSupportedError, bucket_length
from ..likelihood import sums
from ..likelihood.lmm import Stats
from ..messages import warn
from ..precision import float64
from ..report import with_timing
from ._likelihood import estimates_at, model_stats, n_and_p
from .tails import t_two_sided
from .unprofiled import deviance_derivatives

METHODS = {"satterthwaite": "satterthwaite", "kenward-roger": "kenward-roger", "kr": "kenward-roger",
           "kenward_roger": "kenward-roger", "kenwardroger": "kenward-roger"}


def canonical_method(ddf: str) -> str:
    key = str(ddf).lower().replace(" ", "")
    if key not in METHODS:
        raise ValueError(f"unknown ddf method {ddf!r}; use 'satterthwaite' or 'kenward-roger'")
    return METHODS[key]


class Point(NamedTuple):
    """Where the df are evaluated: θ, σ, β̂ and cov(β̂) (the fit's optimum unless θ is given)."""

    theta: np.ndarray
    sigma: float
    beta: np.ndarray
    vcov: np.ndarray


def evaluation_point(model, theta=None) -> Point:
    """The fit's optimum, or θ given by the caller (σ̂, β̂ and cov(β̂) then follow from θ)."""
    if theta is None:
        return Point(np.asarray(model.theta, float), model.sigma, model.fixef.to_numpy(), model.vcov.to_numpy())
    stats, beta0 = model_stats(model.design)
    est = _estimates_jit(jnp.asarray(theta, float), stats, jnp.asarray(float(model.reml)))
    return Point(np.asarray(theta, float), float(est.sigma), beta0 + np.asarray(est.beta), np.asarray(est.vcov_beta))


_estimates_jit = jax.jit(estimates_at, compiler_options=ONCE)


# ---- Satterthwaite -------------------------------------------------------------------------------

def unprofiled_deviance(varpar: jax.Array, stats, reml: jax.Array) -> jax.Array:
    """lmerTest's devfun_vp: the REML (reml = 1) or ML deviance at θ = varpar[:-1], σ = varpar[-1].

    From the profiled pieces at θ: with d = n − reml·p and σ̂²(θ) = r²/d,
    deviance(θ, σ) = [criterion(θ) − d(1 + log 2πσ̂²)] + d σ̂²/σ² + d log 2πσ².
    """
    theta, sigma2 = varpar[:-1], varpar[-1] ** 2
    est = estimates_at(theta, stats, reml)
    n, p = n_and_p(stats)
    dof = n - reml * p
    s2 = est.sigma ** 2
    base = est.objective - dof * (1.0 + jnp.log(2.0 * jnp.pi * s2))
    return base + dof * s2 / sigma2 + dof * jnp.log(2.0 * jnp.pi * sigma2)


def covariance_of_beta(varpar: jax.Array, stats, reml: jax.Array) -> jax.Array:
    """lmerTest's get_covbeta: σ²(R_X R_Xᵀ)⁻¹ at θ = varpar[:-1], σ = varpar[-1]."""
    theta, sigma = varpar[:-1], varpar[-1]
    est = estimates_at(theta, stats, reml)
    return (sigma / est.sigma) ** 2 * est.vcov_beta


def _covariance_jacobian(varpar: jax.Array, stats, reml: jax.Array) -> jax.Array:
    """∂cov(β̂)/∂varpar (p × p × k) with cov(β̂) = σ²K, K = (R_X R_Xᵀ)⁻¹: where the per-group sums apply, K from
    them (elementwise over groups, cheap to differentiate) and σ²∂K/∂θ by forward mode, 2σK; else forward mode
    through `covariance_of_beta`."""
    if not (isinstance(stats, Stats) and sums.applies(stats)):
        return jax.jacfwd(covariance_of_beta)(varpar, stats, reml)
    theta, sigma = varpar[:-1], varpar[-1]

    def gram_inverse(t):
        K = sums.fixed_gram_inverse(t, stats)
        return K, K

    dK, K = jax.jacfwd(gram_inverse, has_aux=True)(theta)
    return jnp.concatenate([sigma ** 2 * dK, (2.0 * sigma * K)[..., None]], axis=-1)


def _variance_derivatives_at(varpar, stats, reml):
    """(∇D, ∇²D) of the deviance in varpar = (θ, σ) (`unprofiled.deviance_derivatives`: closed forms for one
    grouping factor, no autodiff through the decomposition) and ∂cov(β̂)/∂varpar: what Satterthwaite's df
    and the variance parameters' standard errors (`information.variance_table`) are built on."""
    _, g, H = deviance_derivatives(varpar, stats, reml)
    return g, H, _covariance_jacobian(varpar, stats, reml)


# one program for both uses, REML and ML fits alike (reml is an argument), kept on disk for the next process
variance_derivatives = Program(_variance_derivatives_at, "variance_derivatives", compiler_options=ONCE)


class Satterthwaite(NamedTuple):
    """A = 2H⁻¹ (asymptotic covariance of varpar) and ∂V/∂varpar_k (p × p × k) at `point`."""

    point: Point
    A: np.ndarray
    jac: np.ndarray
    hessian_eigenvalues: np.ndarray

    def df(self, L: np.ndarray) -> float:
        L = np.asarray(L, float)
        var = L @ self.point.vcov @ L
        grad = np.einsum("i,ijk,j->k", L, self.jac, L)
        return float(2.0 * var ** 2 / (grad @ self.A @ grad))

    def variance(self, L: np.ndarray) -> float:
        L = np.asarray(L, float)
        return float(L @ self.point.vcov @ L)


def positive_part_inverse(H: np.ndarray, tol: float = 1e-8) -> np.ndarray:
    """H⁻¹ over the eigenvalues above `tol` (lmerTest's treatment of a Hessian with zero eigenvalues)."""
    w, V = np.linalg.eigh((H + H.T) / 2)
    keep = w > tol
    return (V[:, keep] / w[keep]) @ V[:, keep].T


@float64
def satterthwaite_pieces(model, theta=None) -> Satterthwaite:
    point = evaluation_point(model, theta)
    stats, _ = model_stats(model.design)
    varpar = jnp.asarray(np.append(point.theta, point.sigma))
    _, H, J = variance_derivatives(varpar, stats, jnp.asarray(float(model.reml)))
    H, J = np.asarray(H), np.asarray(J)
    eigenvalues = np.linalg.eigvalsh((H + H.T) / 2)
    if np.any(eigenvalues < -1e-8):  # as lmerTest: the fit is not at a minimum of the deviance
        warn(f"the deviance's Hessian in (θ, σ) has negative eigenvalue(s) "
             f"{', '.join(f'{v:.1e}' for v in eigenvalues[eigenvalues < -1e-8])}: the model may not have "
             "converged; Satterthwaite df use its positive part", RuntimeWarning)
    return Satterthwaite(point, 2.0 * positive_part_inverse(H), J, eigenvalues)


# ---- Kenward-Roger -------------------------------------------------------------------------------

class ZSpace(NamedTuple):
    """ZᵀZ and ZᵀX in blocks that V⁻¹ does not couple (one per group when there is one grouping
    factor; a single dense block otherwise), X'X, n, and where each γ entry goes in D (m × m)."""

    S: np.ndarray       # (B, m, m)
    ZtX: np.ndarray     # (B, m, p)
    XtX: np.ndarray     # (p, p)
    n: int
    d_rows: np.ndarray  # D[d_rows[e], d_cols[e]] = D[d_cols[e], d_rows[e]] = γ[d_param[e]]
    d_cols: np.ndarray
    d_param: np.ndarray


def _factor_blocks(info):
    """(Z (n × q_k), level codes, number of levels) per grouping factor, the padded one first."""
    factors = getattr(info, "factors", None)
    if factors is None:
        return [(np.asarray(info.Z), np.asarray(info.group_codes), int(info.n_groups))]
    return [(np.asarray(f.Z), np.asarray(f.codes), int(f.n_levels)) for f in factors]


def z_space(model) -> ZSpace:
    info = model.info
    X = np.asarray(info.X, float)
    layout = model.layout
    block_of = layout.block
    rows, cols = layout.single_entries()
    blocks = _factor_blocks(info)
    n, p = X.shape
    if len(blocks) == 1:
        Z, codes, G = blocks[0]
        q = Z.shape[1]
        S = np.zeros((G, q, q))
        np.add.at(S, codes, Z[:, :, None] * Z[:, None, :])
        ZtX = np.zeros((G, q, p))
        np.add.at(ZtX, codes, Z[:, :, None] * X[:, None, :])
        e = np.arange(layout.size)
        return ZSpace(S, ZtX, X.T @ X, n, rows, cols, e)
    # several grouping factors: one dense block over all random-effect columns (level-major per factor)
    offsets = np.cumsum([0] + [Zk.shape[1] * Gk for Zk, _, Gk in blocks])
    Q = int(offsets[-1])
    if Q > 6000:
        raise NotYetSupportedError(f"Kenward-Roger with several grouping factors forms a dense {Q} × {Q} "
                                   "matrix; this model is too large for it (use ddf='satterthwaite')")
    z_cols = np.concatenate([offsets[k] + codes[:, None] * Zk.shape[1] + np.arange(Zk.shape[1])[None, :]
                             for k, (Zk, codes, _) in enumerate(blocks)], axis=1)
    vals = np.concatenate([Zk for Zk, _, _ in blocks], axis=1)
    S = np.zeros((Q, Q))
    np.add.at(S, (z_cols[:, :, None], z_cols[:, None, :]), vals[:, :, None] * vals[:, None, :])
    ZtX = np.zeros((Q, p))
    np.add.at(ZtX, z_cols, vals[:, :, None] * X[:, None, :])
    rows_, cols_, params = [], [], []
    for e in range(layout.size):
        k = int(block_of[e])
        Zk, _, Gk = blocks[k]
        base = offsets[k] + np.arange(Gk) * Zk.shape[1]
        rows_.append(base + rows[e])
        cols_.append(base + cols[e])
        params.append(np.full(Gk, e))
    return ZSpace(S[None], ZtX[None], X.T @ X, n, np.concatenate(rows_), np.concatenate(cols_),
                  np.concatenate(params))


def _covariance_matrix(gamma_re: jax.Array, zs_shape: int, rows, cols, params) -> jax.Array:
    D = jnp.zeros((zs_shape, zs_shape), gamma_re.dtype)
    D = D.at[rows, cols].set(gamma_re[params])
    return D.at[cols, rows].set(gamma_re[params])


def marginal_information(gamma: jax.Array, S, ZtX, XtX, rows, cols, params) -> jax.Array:
    """XᵀV⁻¹X at γ = (covariance entries, σ²)."""
    sigma2 = gamma[-1]
    m = S.shape[-1]
    D = _covariance_matrix(gamma[:-1], m, rows, cols, params)
    A = sigma2 * jnp.eye(m) + S @ D
    inner = jnp.einsum("bmp,mk,bkr->pr", ZtX, D, jnp.linalg.solve(A, ZtX))
    return (XtX - inner) / sigma2


def log_det_v_and_info(gamma: jax.Array, S, ZtX, XtX, n, rows, cols, params) -> jax.Array:
    """log|V| + log|XᵀV⁻¹X| at γ (its negative Hessian is pbkrtest's IE2); blocks of zeros (padding) add
    nothing, as n − (number of blocks)·m counts them."""
    sigma2 = gamma[-1]
    m = S.shape[-1]
    D = _covariance_matrix(gamma[:-1], m, rows, cols, params)
    A = sigma2 * jnp.eye(m) + S @ D
    logdet_A = jnp.sum(jnp.linalg.slogdet(A)[1])
    logdet_V = (n - S.shape[0] * m) * jnp.log(sigma2) + logdet_A
    info = marginal_information(gamma, S, ZtX, XtX, rows, cols, params)
    return logdet_V + jnp.linalg.slogdet(info)[1]


def _kr_derivatives_at(gamma, S, ZtX, XtX, rows, cols, params, n):
    """P = ∂(XᵀV⁻¹X)/∂γ (p, p, k), its second derivatives (p, p, k, k) and IE2, all forward over forward
    (the first derivatives come out of the second's pass)."""
    args = (S, ZtX, XtX, rows, cols, params)

    def first(g):
        P = jax.jacfwd(marginal_information)(g, *args)
        return P, P

    Hq, P = jax.jacfwd(first, has_aux=True)(gamma)
    IE2 = -jax.jacfwd(jax.jacfwd(log_det_v_and_info))(gamma, S, ZtX, XtX, n, rows, cols, params)
    return P, Hq, IE2


def _padded_blocks(zs: ZSpace) -> tuple[np.ndarray, np.ndarray]:
    """ZᵀZ and ZᵀX per block, one-factor blocks padded with zeros to a bucketed count (σ²I blocks of V that
    add nothing), so that models of similar sizes share the program."""
    if zs.S.shape[0] == 1:
        return zs.S, zs.ZtX
    pad = [(0, bucket_length(zs.S.shape[0]) - zs.S.shape[0])] + [(0, 0)] * 2
    return np.pad(zs.S, pad), np.pad(zs.ZtX, pad)


# kept on disk for the next process
_kr_derivatives = Program(_kr_derivatives_at, "kenward_roger", compiler_options=ONCE)


class KenwardRoger(NamedTuple):
    """pbkrtest's vcovAdj pieces at `point`: Φ (unadjusted), Φ_A (adjusted), P_i and W."""

    point: Point
    vcov_adj: np.ndarray
    P: np.ndarray   # (k, p, p)
    W: np.ndarray   # (k, k)

    def df(self, L: np.ndarray) -> float:
        """pbkrtest's Lb_ddf: the denominator df for the hypothesis Lβ = 0 (L: one row or a matrix)."""
        L = np.atleast_2d(np.asarray(L, float))
        V0 = self.point.vcov
        Theta = L.T @ np.linalg.solve(L @ V0 @ L.T, L)
        U = np.einsum("ab,kbc,cd->kad", Theta @ V0, self.P, V0)
        traces = np.einsum("kaa->k", U)
        A1 = traces @ self.W @ traces
        A2 = np.einsum("ij,iab,jba->", self.W, U, U)
        q = np.linalg.matrix_rank(L)
        B = (A1 + 6.0 * A2) / (2.0 * q)
        g = ((q + 1) * A1 - (q + 4) * A2) / ((q + 2) * A2)
        c1 = g / (3 * q + 2 * (1 - g))
        c2 = (q - g) / (3 * q + 2 * (1 - g))
        c3 = (q + 2 - g) / (3 * q + 2 * (1 - g))
        V0_, V1, V2 = 1 + c1 * B, 1 - c2 * B, 1 - c3 * B
        V0_ = 0.0 if abs(V0_) < 1e-10 else V0_
        num = 1 - A2 / q
        ratio = 1.0 if abs(num) < 1e-14 and abs(V1) < 1e-14 else num / V1
        rho = ratio ** 2 * V0_ / V2 / q
        return float(4 + (q + 2) / (q * rho - 1))

    def variance(self, L: np.ndarray) -> float:
        L = np.asarray(L, float)
        return float(L @ self.vcov_adj @ L)


def variance_parameters(model, point: Point) -> np.ndarray:
    """γ: each term's covariance entries (θ's positions in the lower triangle) and σ², at `point`."""
    layout = model.layout
    rows, cols = layout.single_entries()
    gamma = np.empty(layout.size + 1)
    for k, lam in enumerate(layout.lambda_blocks(np.asarray(point.theta, float))):
        mine = layout.block == k
        D = point.sigma ** 2 * lam @ lam.T
        gamma[:-1][mine] = D[rows[mine], cols[mine]]
    gamma[-1] = point.sigma ** 2
    return gamma


@float64
def kenward_roger_pieces(model, theta=None, zs: ZSpace | None = None) -> KenwardRoger:
    """pbkrtest's vcovAdj at the optimum (or at θ); `zs` overrides the Z-space blocks (for tests)."""
    if not model.reml:
        raise ValueError("Kenward-Roger degrees of freedom need a REML fit (as in pbkrtest/lmerTest); "
                         "refit with REML=True or use ddf='satterthwaite'")
    point = evaluation_point(model, theta)
    zs = z_space(model) if zs is None else zs
    gamma = variance_parameters(model, point)
    S, ZtX = _padded_blocks(zs)
    P, Hq, IE2 = _kr_derivatives(*(jnp.asarray(x) for x in (gamma, S, ZtX, zs.XtX, zs.d_rows, zs.d_cols, zs.d_param,
                                                              float(zs.n))))
    P = np.moveaxis(np.asarray(P), -1, 0)                  # (k, p, p)
    Hq = np.moveaxis(np.asarray(Hq), (-2, -1), (0, 1))     # (k, k, p, p)
    IE2 = np.asarray(IE2)
    IE2 = (IE2 + IE2.T) / 2
    condition = np.min(np.abs(np.linalg.eigvalsh(IE2)))
    W = 2.0 * (np.linalg.inv(IE2) if condition > 1e-10 else np.linalg.pinv(IE2))
    W = (W + W.T) / 2
    Phi = point.vcov
    # Σ_ij W_ij Q_ij = ½ Σ_ij W_ij ∂²(XᵀV⁻¹X)/∂γ_i∂γ_j since W is symmetric
    U = 0.5 * np.einsum("ij,ijab->ab", W, Hq) - np.einsum("ij,iab,bc,jcd->ad", W, P, Phi, P)
    vcov_adj = Phi + 2.0 * Phi @ U @ Phi
    return KenwardRoger(point, (vcov_adj + vcov_adj.T) / 2, P, W)


# ---- tables --------------------------------------------------------------------------------------

def _pieces(model, method: str, theta=None):
    method = canonical_method(method)
    model.require_plain(f"{method} degrees of freedom")
    return method, (satterthwaite_pieces(model, theta) if method == "satterthwaite"
                    else kenward_roger_pieces(model, theta))


@with_timing
def ddf_table(model, ddf: str = "satterthwaite", theta=None) -> pd.DataFrame:
    """lmerTest's summary(m, ddf=...) coefficient table: estimate, std_error (KR: adjusted), df,
    t statistic and two-sided p value per fixed effect. `theta` evaluates at another θ (e.g. lme4's)."""
    method, pieces = _pieces(model, ddf, theta)
    names = list(model.fixef.index)
    beta = pieces.point.beta
    rows = []
    for j, name in enumerate(names):
        L = np.zeros(len(names))
        L[j] = 1.0
        se = np.sqrt(pieces.variance(L))
        df = pieces.df(L)
        t = beta[j] / se
        rows.append((name, beta[j], se, df, t, t_two_sided(t, df)))
    out = pd.DataFrame(rows, columns=["term", "estimate", "std_error", "df", "statistic", "p_value"])
    out.attrs["ddf"] = method
    return out


def satterthwaite(model, theta=None) -> pd.DataFrame:
    """Satterthwaite df and p values per fixed effect (lmerTest's default)."""
    return ddf_table(model, "satterthwaite", theta)


def kenward_roger(model, theta=None) -> pd.DataFrame:
    """Kenward-Roger adjusted standard errors, df and p values per fixed effect (REML fits)."""
    return ddf_table(model, "kenward-roger", theta)


def contrast_test(model, L, ddf: str = "satterthwaite", rhs: float = 0.0) -> dict:
    """t test of the contrast Lβ = rhs (L a vector over the fixed effects, or a dict name → weight)."""
    names = list(model.fixef.index)
    if isinstance(L, dict):
        unknown = [k for k in L if k not in names]
        if unknown:
            raise KeyError(f"{unknown[0]!r} is not a fixed effect of the model (they are: {', '.join(names)})")
        L = np.array([float(L.get(n, 0.0)) for n in names])
    L = np.asarray(L, float)
    if L.shape != (len(names),):
        raise ValueError(f"contrast needs {len(names)} weights, one per fixed effect; got shape {L.shape}")
    method, pieces = _pieces(model, ddf)
    estimate = float(L @ pieces.point.beta)
    se = float(np.sqrt(pieces.variance(L)))
    df = pieces.df(L)
    t = (estimate - rhs) / se
    return {"estimate": estimate, "std_error": se, "df": df, "statistic": t,
            "p_value": float(t_two_sided(t, df)), "ddf": method}
