"""The profiled criterion as a small function of per-group sums, with its exact Hessian by a split chain rule.

Same model and criterion as `lmm` (one grouping factor); this is the form batched
fits use. Each group g contributes additive terms

    t_g(θ) = ( log|L_g|²,  S_g = [R_ZX,g c_u,g]ᵀ[R_ZX,g c_u,g] )      with L_gL_gᵀ = ΛᵀZ_gᵀZ_gΛ + I,

where [R_ZX,g c_u,g] = L_g⁻¹Λᵀ[Z_gᵀX Z_gᵀy]. The criterion is a function F of T = Σ_g t_g alone:

    C = [XᵀX Xᵀy; yᵀX yᵀy] − Σ_g S_g,   R_X R_Xᵀ = C_XX,   r² = C_yy − |R_X⁻¹C_Xy|²,
    F(T) = Σ_g log|L_g|² + reml·log|R_X|² + (n − reml·p)(1 + log(2π r²/(n − reml·p))),

which is `lmm.criterion(lmm.decompose(θ))` rearranged. Two things make this form fast
under `vmap` over many problems:

* t_g is written out entry by entry on (G,) arrays (Λ's structural zeros skipped), so the
  whole per-group part is elementwise arithmetic that XLA fuses; no tiny matmuls.
* The Hessian splits at the sums: with J = Σ_g ∂t_g/∂θ and K = Σ_g ∂²t_g/∂θ²,
  ∇F = Jᵀ∇_T F and ∇²F = Jᵀ(∇²_T F)J + Σ_o (∇_T F)_o K_o. The per-group derivatives
  are forward-mode directional derivatives (one jvp per θ element, one jvp-of-jvp per
  pair), again elementwise; the small outer F's gradient and Hessian are closed forms too (`criterion_derivatives`).
  It is the exact Hessian (BATCHING.md point 4).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from . import linalg
from .lmm import Stats, relative_factor

# Beyond this many θ elements the k(k+1)/2 jvp-of-jvp programs grow too large; use jax.hessian instead.
SPLIT_MAX_THETA = 6


def _add(terms):
    """Sum of the non-None entries of `terms`; None when there are none (a structural zero)."""
    terms = [t for t in terms if t is not None]
    if not terms:
        return None
    total = terms[0]
    for t in terms[1:]:
        total = total + t
    return total


def applies(stats: Stats) -> bool:
    """Whether this form applies: every θ element is one entry of Λ, in θ order (unstructured, diagonal)."""
    entries = stats.structure.single_entries()
    return entries is not None and [k for _, _, k in entries] == list(range(len(entries)))


def _entries(stats: Stats) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(rows, cols) of Λ that θ's elements are, in θ order."""
    entries = stats.structure.single_entries()
    return tuple(r for r, _, _ in entries), tuple(c for _, c, _ in entries)


def _lambda_entries(theta: jax.Array, stats: Stats) -> list[list]:
    """Λ as a nested list of θ entries, None where Λ is structurally zero."""
    q = stats.q
    lam = [[None] * q for _ in range(q)]
    for k, (i, j) in enumerate(zip(*_entries(stats))):
        lam[i][j] = theta[k]
    return lam


def n_terms(p: int) -> int:
    """Rows of `group_contributions`: the log-determinant and the upper triangle of S_g ((p+1) × (p+1))."""
    return 1 + (p + 1) * (p + 2) // 2


def group_contributions(theta: jax.Array, stats: Stats) -> jax.Array:
    """t_g for every group: (n_terms(p), G); row 0 is log|L_g|², then S_g's upper triangle row by row."""
    q, p = stats.q, stats.p
    if q > linalg.UNROLL_MAX:
        return _group_contributions_dense(theta, stats)
    A = [[stats.ZtZ[..., i, j] for j in range(q)] for i in range(q)]
    B = [[stats.ZtX[..., i, c] for c in range(p)] + [stats.Zty[..., i]] for i in range(q)]
    lam = _lambda_entries(theta, stats)
    # AΛ, then M = ΛᵀAΛ + I (lower triangle)
    zero = jnp.zeros_like(A[0][0])
    AL = [[_add([A[i][j] * lam[j][b] for j in range(q) if lam[j][b] is not None]) for b in range(q)]
          for i in range(q)]
    M = {}
    for a in range(q):
        for b in range(a + 1):
            s = _add([lam[i][a] * AL[i][b] for i in range(q) if lam[i][a] is not None and AL[i][b] is not None])
            s = zero if s is None else s
            M[a, b] = s + 1.0 if a == b else s
    L = {}
    for j in range(q):
        d = M[j, j] - _add([L[j, m] ** 2 for m in range(j)]) if j else M[j, j]
        L[j, j] = jnp.sqrt(d)
        for i in range(j + 1, q):
            s = M[i, j] - _add([L[i, m] * L[j, m] for m in range(j)]) if j else M[i, j]
            L[i, j] = s / L[j, j]
    # C = L⁻¹ΛᵀB, q × (p+1)
    C = []
    for a in range(q):
        row = []
        for c in range(p + 1):
            s = _add([lam[i][a] * B[i][c] for i in range(q) if lam[i][a] is not None])
            s = zero if s is None else s
            for m in range(a):
                s = s - L[a, m] * C[m][c]
            row.append(s / L[a, a])
        C.append(row)
    logdet = 2.0 * _add([jnp.log(L[a, a]) for a in range(q)])
    S = [_add([C[a][c] * C[a][d] for a in range(q)]) for c in range(p + 1) for d in range(c, p + 1)]
    return jnp.stack([logdet] + S)


def _group_contributions_dense(theta: jax.Array, stats: Stats) -> jax.Array:
    """`group_contributions` with matrix operations, for large q."""
    lam = relative_factor(theta, stats)
    lamT = lam.T
    L = linalg.cholesky(lamT @ stats.ZtZ @ lam + jnp.eye(stats.q))
    B = jnp.concatenate([stats.ZtX, stats.Zty[..., None]], axis=-1)
    C = linalg.solve_lower(L, lamT @ B)
    S = jnp.einsum("gai,gaj->ijg", C, C)
    iu, ju = jnp.triu_indices(stats.p + 1)
    return jnp.concatenate([2.0 * linalg.log_diag_sum(L)[None], S[iu, ju]], axis=0)


def _upper_index(p: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows and columns of the upper triangle of a (p+1) × (p+1) matrix, row by row (T's order after its first)."""
    return np.triu_indices(p + 1)


def _symmetric(T: jax.Array, p: int) -> jax.Array:
    """The (p+1) × (p+1) symmetric S from T's entries after the first (its upper triangle, row by row); leading
    axes of T are kept. One gather: the program stays small."""
    index = np.zeros((p + 1, p + 1), int)
    iu, ju = _upper_index(p)
    index[iu, ju] = index[ju, iu] = np.arange(1, iu.size + 1)
    return T[..., index]


def _upper(G: jax.Array, p: int) -> jax.Array:
    """∂/∂T of ⟨G, S(T)⟩ for a symmetric G (leading axes kept): S's upper triangle, row by row, off-diagonal
    entries doubled."""
    iu, ju = _upper_index(p)
    return G[..., iu, ju] * np.where(iu == ju, 1.0, 2.0)


def _pad(X: jax.Array) -> jax.Array:
    """X (..., p, p) with a row and a column of zeros added last (a primitive: cheaper to trace than jnp.pad)."""
    return jax.lax.pad(X, jnp.zeros((), X.dtype), [(0, 0, 0)] * (X.ndim - 2) + [(0, 1, 0)] * 2)


def _fixed(T: jax.Array, stats: Stats):
    """C = [XᵀX Xᵀy; yᵀX yᵀy] − S, R_X (R_XR_Xᵀ = C_XX) and r² = C_yy − |R_X⁻¹C_Xy|²."""
    p = stats.p
    S = _symmetric(T, p)
    RX = _factor_xx(S, stats)
    cb = linalg.solve_lower(RX, (stats.Xty - S[:p, p])[:, None])[:, 0]
    return S, RX, cb, stats.yty - S[p, p] - jnp.sum(cb * cb)


def _factor_xx(S: jax.Array, stats: Stats) -> jax.Array:
    """R_X, the lower Cholesky factor of C_XX = XᵀX − S_XX."""
    return linalg.cholesky(stats.XtX - S[:stats.p, :stats.p])


def _inverse_gram(RX: jax.Array) -> jax.Array:
    """K = C_XX⁻¹ = R_X⁻ᵀR_X⁻¹ from R_X."""
    RXinv = linalg.solve_lower(RX, jnp.eye(RX.shape[-1], dtype=RX.dtype))
    return RXinv.T @ RXinv


def fixed_gram_inverse(theta: jax.Array, stats: Stats) -> jax.Array:
    """R_X⁻ᵀR_X⁻¹ (cov(β̂)/σ̂²) at θ from the summed contributions, and nothing else (what ∂cov(β̂)/∂θ
    differentiates: its forward-mode pass traces only these operations)."""
    T = jnp.sum(group_contributions(theta, stats), axis=-1)
    return _inverse_gram(_factor_xx(_symmetric(T, stats.p), stats))


def _criterion(T: jax.Array, RX: jax.Array, r2: jax.Array, dof: jax.Array, reml: jax.Array) -> jax.Array:
    """F from T's log-determinant entry, R_X, r² and the residual degrees of freedom."""
    return T[0] + reml * 2.0 * linalg.log_diag_sum(RX) + dof * (1.0 + jnp.log(2.0 * jnp.pi * r2 / dof))


def criterion_from_sums(T: jax.Array, stats: Stats, reml: jax.Array) -> jax.Array:
    """F(T): the REML criterion (reml = 1) or ML deviance (reml = 0) from the summed contributions."""
    _, RX, _, r2 = _fixed(T, stats)
    return _criterion(T, RX, r2, stats.n - reml * stats.p, reml)


def _fixed_solution(T: jax.Array, stats: Stats, reml: jax.Array):
    """R_X, r², the residual degrees of freedom, K = C_XX⁻¹ = R_X⁻ᵀR_X⁻¹ and β = K C_Xy, from T."""
    _, RX, cb, r2 = _fixed(T, stats)
    beta = linalg.solve_upper_t(RX, cb[:, None])[:, 0]
    return RX, r2, stats.n - reml * stats.p, _inverse_gram(RX), beta


def fixed_effects(theta: jax.Array, stats: Stats, reml: jax.Array):
    """F at θ and what the fixed effects need there: β̂ (relative to β₀), σ̂² and R_X⁻ᵀR_X⁻¹ (cov(β̂)/σ̂²), from
    the summed contributions (as `lmm.estimates` from its decomposition)."""
    T = jnp.sum(group_contributions(theta, stats), axis=-1)
    RX, r2, dof, K, beta = _fixed_solution(T, stats, reml)
    return _criterion(T, RX, r2, dof, reml), beta, r2 / dof, K


def criterion_derivatives(T: jax.Array, stats: Stats, reml: jax.Array, directions: jax.Array):
    """F(T), ∇F and ∇²F along each row of `directions` (k × m), in closed form (no autodiff to trace).

    With C = A − S, K = C_XX⁻¹, β = K C_Xy and v = [−β; 1]: r² = vᵀCv (β minimises it), so
    ∂F/∂C = reml·K (on the XX block) + (dof/r²) vvᵀ =: Γ; along dC, dK = −K dC K, dr² = vᵀdC v and
    dv = [−K (dC v)_X; 0], which give dΓ. ∂F/∂T₀ = 1 and T's other entries enter C as −S(T).
    All directions at once (a leading axis), not mapped one by one: fewer operations to trace."""
    p = stats.p
    RX, r2, dof, K, beta = _fixed_solution(T, stats, reml)
    v = jnp.concatenate([-beta, jnp.ones(1, T.dtype)])
    vv = jnp.outer(v, v)
    gamma = reml * _pad(K) + (dof / r2) * vv
    grad = jnp.concatenate([jnp.ones(1, T.dtype), -_upper(gamma, p)])
    dC = -_symmetric(directions, p)                                   # (k, p+1, p+1)
    dCv = dC @ v
    dr2 = dCv @ v
    dv = jnp.concatenate([-dCv[:, :p] @ K, jnp.zeros((dCv.shape[0], 1), T.dtype)], axis=1)   # K is symmetric
    dvv = dv[:, :, None] * v[None, None, :]
    d_gamma = (-reml * _pad(K @ dC[:, :p, :p] @ K) - (dof * dr2 / r2 ** 2)[:, None, None] * vv
               + (dof / r2) * (dvv + jnp.swapaxes(dvv, 1, 2)))
    along = jnp.concatenate([jnp.zeros((dC.shape[0], 1), T.dtype), -_upper(d_gamma, p)], axis=1)
    return _criterion(T, RX, r2, dof, reml), grad, along


def objective(theta: jax.Array, stats: Stats, reml: jax.Array) -> jax.Array:
    """The profiled criterion of θ (equal to `lmm.objective` up to rounding)."""
    return criterion_from_sums(jnp.sum(group_contributions(theta, stats), axis=-1), stats, reml)


def _mm(X, Y):
    """Product of small matrices held as nested lists of (G,) arrays, None for structural zeros."""
    return [[_add([X[i][k] * Y[k][j] for k in range(len(Y)) if X[i][k] is not None and Y[k][j] is not None])
             for j in range(len(Y[0]))] for i in range(len(X))]


def _t(X):
    return [list(col) for col in zip(*X)]


def _dense(X, zero):
    return [[zero if v is None else v for v in row] for row in X]


def _dot(u, v):
    return _add([a * b for a, b in zip(u, v)])


def objective_derivatives(theta: jax.Array, stats: Stats, reml: jax.Array):
    """(f, ∇f, ∇²f) at θ, exact, from closed-form per-group derivatives and the split chain rule.

    With ∂Λ/∂θ_k = e_r e_cᵀ (θ_k is Λ's entry (r, c)), N = M⁻¹Λᵀ, W = ΛN, P = I − WA (A = ZᵀZ,
    B = [ZᵀX Zᵀy] of a group), α_r = BᵀP e_r, β_c = Bᵀ Nᵀe_c, and G = ∂F/∂S (symmetric):

        ∂_k log|M| = 2 (NA)_cr,
        ∂_k∂_l log|M| = 2 [(M⁻¹)_{c c'} (PᵀA)_{r' r} − (NA)_{c r'} (NA)_{c' r}],
        ∂_k S = α_r β_cᵀ + β_c α_rᵀ,   tr(G ∂_k S) = 2 β_cᵀGα_r,
        ½ tr(G ∂_k∂_l S) = −(NA)_{c' r} β_cᵀGα_{r'} − (PᵀA)_{r' r} β_cᵀGβ_{c'} + (M⁻¹)_{c c'} α_{r'}ᵀGα_r
                           − (NA)_{c r'} β_{c'}ᵀGα_r            (θ_l is entry (r', c')),

    summed over groups; the outer F contributes Jᵀ(∇²_T F)J with J the summed first derivatives.
    Everything per group is written out entry by entry, so it is elementwise over groups and batches.
    """
    k, q, p = theta.shape[0], stats.q, stats.p
    if q > linalg.UNROLL_MAX:
        g, hvp = jax.linearize(lambda z: jax.grad(objective)(z, stats, reml), theta)
        return objective(theta, stats, reml), g, jax.vmap(hvp)(jnp.eye(k, dtype=theta.dtype))
    m1 = p + 1
    A = [[stats.ZtZ[..., i, j] for j in range(q)] for i in range(q)]
    B = [[stats.ZtX[..., i, c] for c in range(p)] + [stats.Zty[..., i]] for i in range(q)]
    zero = jnp.zeros_like(A[0][0])
    lam = _lambda_entries(theta, stats)
    lamT = _t(lam)
    # M = ΛᵀAΛ + I, its Cholesky factor L and L⁻¹ (lower triangular)
    M = _dense(_mm(lamT, _mm(A, lam)), zero)
    M = [[M[i][j] + 1.0 if i == j else M[i][j] for j in range(q)] for i in range(q)]
    L = {}
    for j in range(q):
        L[j, j] = jnp.sqrt(M[j][j] - _add([L[j, m] ** 2 for m in range(j)]) if j else M[j][j])
        for i in range(j + 1, q):
            L[i, j] = (M[i][j] - _add([L[i, m] * L[j, m] for m in range(j)]) if j else M[i][j]) / L[j, j]
    Li = {}
    for i in range(q):
        Li[i, i] = 1.0 / L[i, i]
        for j in range(i):
            Li[i, j] = -_add([L[i, m] * Li[m, j] for m in range(j, i)]) / L[i, i]
    Linv = [[Li.get((i, j)) for j in range(q)] for i in range(q)]
    Minv = _dense(_mm(_t(Linv), Linv), zero)
    LtB = _dense(_mm(lamT, B), zero)                 # ΛᵀB
    C = _mm(Linv, LtB)                               # L⁻¹ΛᵀB
    N = _dense(_mm(Minv, lamT), zero)                # M⁻¹Λᵀ
    NA = _mm(N, A)
    NB = _mm(_t(Linv), C)                            # M⁻¹ΛᵀB = N B
    W = _dense(_mm(lam, N), zero)
    AW = _mm(A, W)
    PtA = [[A[i][j] - _dot(AW[i], [A[m][j] for m in range(q)]) for j in range(q)] for i in range(q)]
    PtB = [[B[i][c] - _dot(AW[i], [B[m][c] for m in range(q)]) for c in range(m1)] for i in range(q)]
    logdet = 2.0 * _add([jnp.log(L[a, a]) for a in range(q)])
    upper = [(c, d) for c in range(m1) for d in range(c, m1)]
    S = [_dot([C[a][c] for a in range(q)], [C[a][d] for a in range(q)]) for c, d in upper]
    rows, cols = _entries(stats)

    def total(x):
        return jnp.sum(x, axis=-1)

    # first derivatives of the summed contributions: J (m × k)
    J = []
    for r, c in zip(rows, cols):
        dS = [PtB[r][a] * NB[c][b] + NB[c][a] * PtB[r][b] for a, b in upper]
        J.append(jnp.stack([total(2.0 * NA[c][r])] + [total(v) for v in dS]))
    J = jnp.stack(J, axis=-1)
    T = jnp.stack([total(logdet)] + [total(v) for v in S])

    # the outer F's gradient, and its Hessian only along the k columns of J (not the m × m matrix)
    f, dT, HJ = criterion_derivatives(T, stats, reml, J.T)   # HJ: (k, m)
    Gm = [[None] * m1 for _ in range(m1)]
    for i, (a, b) in enumerate(upper, start=1):
        Gm[a][b] = Gm[b][a] = dT[i] if a == b else dT[i] * 0.5
    PG = [[_dot(PtB[r], [Gm[a][b] for a in range(m1)]) for b in range(m1)] for r in range(q)]
    NG = [[_dot(NB[c], [Gm[a][b] for a in range(m1)]) for b in range(m1)] for c in range(q)]
    AGA = [[_dot(PG[r], PtB[s]) for s in range(q)] for r in range(q)]
    BGB = [[_dot(NG[c], NB[d]) for d in range(q)] for c in range(q)]
    BGA = [[_dot(NG[c], PtB[r]) for r in range(q)] for c in range(q)]
    g = jnp.stack([dT[0] * J[0, i] + total(2.0 * BGA[c][r]) for i, (r, c) in enumerate(zip(rows, cols))])
    H = [[None] * k for _ in range(k)]
    for i, (r, c) in enumerate(zip(rows, cols)):
        for j, (r2, c2) in enumerate(zip(rows, cols)):
            if j > i:
                continue
            d2l = 2.0 * (Minv[c][c2] * PtA[r2][r] - NA[c][r2] * NA[c2][r])
            d2S = 2.0 * (-NA[c2][r] * BGA[c][r2] - PtA[r2][r] * BGB[c][c2] + Minv[c][c2] * AGA[r2][r]
                         - NA[c][r2] * BGA[c2][r])
            H[i][j] = H[j][i] = dT[0] * total(d2l) + total(d2S)
    H = jnp.stack([jnp.stack(row) for row in H]) + jnp.sum(HJ[:, None, :] * J.T[None, :, :], axis=-1)
    return f, g, H
