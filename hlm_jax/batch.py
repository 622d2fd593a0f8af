"""Many fits in one program: per-group OLS (lmlist), the parametric bootstrap, the bootstrap
likelihood-ratio test (pb_test) and one model fitted to many data sets (fit_many).

How the batched fits are fast (see shared/BATCHING.md):

* Only y changes between bootstrap replicates, so the per-group ZᵀZ, ZᵀX and XᵀX are computed
  once and each replicate needs only Zᵀy, Xᵀy, yᵀy — and those are simulated directly, never y:
  per group, b_g = σΛz_g, and Uᵀε for the group's columns U = [Z X ...] is σF_g v_g with
  F_gF_gᵀ = UᵀU and v_g standard normal; εᵀε is σ²(|v|² + χ²) with χ² on n − Σ rank(U_g) df.
  This is the exact joint distribution of the statistics, at a cost independent of n.
* The criterion is `likelihood.sums`: elementwise per-group terms and an exact split-chain-rule
  Hessian in closed form; the optimiser is `optimize.minimize_queue`: a fixed number of slots
  take Newton steps together and a slot whose problem finished is refilled from a queue, so no
  slot idles behind a straggler and the step compiles once.
* Replicate i's random numbers come from fold_in(key, i): results do not depend on chunk sizes
  or the number of devices. Chunks are padded to fixed power-of-two sizes, so repeated calls
  reuse the compiled program; the batch axis is sharded over all devices (shard_map over a Mesh).
"""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from .design import DesignError, NotYetSupportedError, bucket_length, build_design, factor_codes
from .formula import Name, check_columns, model_matrix, parse_formula, parse_lmlist, response_values, variables
from .likelihood import sums
from .likelihood.lmm import Stats, estimates
from .model.layout import FactorStructure, ThetaLayout, theta_layout
from .optimize import batch_converged, minimize_queue
from .precision import float64
from .report import html_block, html_frame

# Slots stepping together per device (`optimize.minimize_queue`): on a CPU a few hundred problems keep
# the working set in cache; accelerators want wide batches. A chunk (one program call) holds up to
# CHUNK problems per device; the progress bar advances per chunk.
CPU_WIDTH, ACCELERATOR_WIDTH = 256, 8192
CPU_CHUNK, ACCELERATOR_CHUNK = 4096, 65536
MIN_CHUNK = 64
MEMORY_FRACTION = 0.25


class BatchWarning(UserWarning):
    """Some fits of a batch failed (not converged, or not estimable); they are counted, not hidden."""


# ---- results -------------------------------------------------------------------------------------

@dataclass
class BootstrapResult:
    """Parametric bootstrap replicates of a fitted model.

    `replicates`: one row per replicate: fixed effects by name, "sigma", then the standard deviations
    and correlations named as lme4's confint(oldNames=FALSE) names them; `theta` the replicates' θ
    (n × k, lme4's order); `converged` each replicate's convergence flag (failed replicates keep
    their last iterate in `replicates` and are left out of `confint`).
    """

    replicates: pd.DataFrame
    theta: np.ndarray
    converged: np.ndarray
    objective: np.ndarray
    iterations: np.ndarray
    seed: int
    timing: dict = field(default_factory=dict)
    _simulation: object = field(default=None, repr=False)

    @property
    def n(self) -> int:
        return len(self.converged)

    @property
    def n_failed(self) -> int:
        return int(np.sum(~self.converged))

    def confint(self, level: float = 0.95) -> pd.DataFrame:
        """Percentile intervals from the converged replicates (a correlation whose sd is 0 is skipped)."""
        if not 0 < level < 1:
            raise ValueError(f"level must be in (0, 1), got {level}")
        ok = self.replicates.loc[self.converged]
        alpha = (1 - level) / 2
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            lower = np.nanquantile(ok.to_numpy(), alpha, axis=0)
            upper = np.nanquantile(ok.to_numpy(), 1 - alpha, axis=0)
        return pd.DataFrame({"lower": lower, "upper": upper}, index=self.replicates.columns)

    def responses(self, which) -> pd.DataFrame:
        """Response vectors (rows as the model's data) whose sufficient statistics are exactly those of
        replicates `which`: refitting any of them with `lmer` reproduces that replicate's fit.

        The replicates simulate the statistics, not y; this draws the part of ε that the statistics
        do not determine (its direction orthogonal to every group's columns) afresh.
        """
        which = np.atleast_1d(np.asarray(which, dtype=np.int64))
        if np.any((which < 0) | (which >= self.n)):
            raise IndexError(f"replicate indices must lie in [0, {self.n})")
        ys = self._simulation.responses(self.seed, which)
        return pd.DataFrame(ys.T, index=self._simulation.row_index, columns=[f"rep_{i}" for i in which])

    def summary(self, level: float = 0.95) -> pd.DataFrame:
        """Per parameter: mean, sd and percentile interval of the converged replicates."""
        ok = self.replicates.loc[self.converged]
        return pd.concat([ok.mean().rename("mean"), ok.std().rename("sd"), self.confint(level)], axis=1)

    def _repr_html_(self) -> str:
        return html_block(f"Parametric bootstrap: {self.n} replicates, {self.n_failed} failed, seed {self.seed}",
                          html_frame(self.summary(), 5))

    def __repr__(self) -> str:
        return (f"BootstrapResult(n={self.n}, failed={self.n_failed}, seed={self.seed})\n"
                f"{self.replicates.describe().T[['mean', 'std', 'min', 'max']]}")


@dataclass
class PBTest:
    """Parametric bootstrap likelihood-ratio test (pbkrtest's PBmodcomp) of nested models.

    `table` has rows "LRT" (χ² p-value) and "PBtest" (bootstrap p-value (1 + #{t* > t}) / (1 + #{t* > 0}),
    as pbkrtest), columns stat, df, p_value; `reference` is the bootstrap distribution of the statistic.
    """

    stat: float
    df: int
    p_chisq: float
    p_boot: float
    reference: np.ndarray
    converged: np.ndarray
    n_failed: int

    @property
    def table(self) -> pd.DataFrame:
        return pd.DataFrame({"stat": [self.stat, self.stat], "df": [float(self.df), np.nan],
                             "p_value": [self.p_chisq, self.p_boot]}, index=["LRT", "PBtest"])

    def __repr__(self) -> str:
        used = int(np.sum(self.converged & (self.reference > 0)))
        return (f"Parametric bootstrap test; samples: {len(self.reference)}, used: {used}, "
                f"failed: {self.n_failed}\n{self.table}")


@dataclass
class LmList:
    """Per-group least-squares fits (lme4's lmList): `coef` and `se` (rows: group levels), the residual
    sd `sigma`, residual degrees of freedom `df_resid` and rows `nobs` per group, and `pooled_sd` (the
    residual sd pooled over the fitted groups). Groups that cannot be fitted (fewer rows than
    coefficients, or collinear columns within the group) have NaN rows and are listed in `failed`
    with the reason."""

    coef: pd.DataFrame
    se: pd.DataFrame
    sigma: pd.Series
    df_resid: pd.Series
    nobs: pd.Series
    failed: pd.Series
    pooled_sd: float

    def tidy(self) -> pd.DataFrame:
        """One row per (group, term): estimate and std_error."""
        est = self.coef.stack(future_stack=True).rename("estimate")
        se = self.se.stack(future_stack=True).rename("std_error")
        out = pd.concat([est, se], axis=1).reset_index()
        return out.rename(columns={out.columns[0]: "group", out.columns[1]: "term"})

    def __repr__(self) -> str:
        return f"LmList: {len(self.coef)} groups, {len(self.failed)} not fitted\n{self.coef}"


# ---- devices, memory and chunks ------------------------------------------------------------------

def _mesh() -> Mesh:
    return Mesh(np.array(jax.devices()), ("batch",))


def _available_bytes() -> int:
    """Free memory of the first device (accelerators) or of the host (CPU)."""
    dev = jax.devices()[0]
    try:
        stats = dev.memory_stats()
    except Exception:  # CPU devices may not report
        stats = None
    if stats and "bytes_limit" in stats:
        return int(stats["bytes_limit"] - stats.get("bytes_in_use", 0))
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return 2 ** 31


def _on_cpu() -> bool:
    return jax.devices()[0].platform == "cpu"


def _width() -> int:
    return CPU_WIDTH if _on_cpu() else ACCELERATOR_WIDTH


def _chunk_size(n: int, bytes_per_problem: int, chunk: int | None) -> int:
    """Problems per device in one chunk: a power of two within MEMORY_FRACTION of the free memory,
    no larger than needed for n (so a repeated call reuses the compiled program)."""
    n_dev = len(jax.devices())
    if chunk is not None:
        if isinstance(chunk, bool) or not isinstance(chunk, (int, np.integer)) or chunk < 1:
            raise ValueError(f"chunk must be a positive integer, got {chunk!r}")
        return bucket_length(-(-int(chunk) // n_dev))
    per_dev = CPU_CHUNK if _on_cpu() else ACCELERATOR_CHUNK
    fits = max(int(MEMORY_FRACTION * _available_bytes()) // max(bytes_per_problem * n_dev, 1), 1)
    per_dev = min(per_dev, 1 << (fits.bit_length() - 1))
    return max(min(per_dev, bucket_length(max(-(-n // n_dev), MIN_CHUNK))), 1)


def _chunk_indices(first: int, per_dev: int, n: int) -> tuple[np.ndarray, int]:
    """Problem indices of one chunk laid out device by device, dealt round-robin so every device gets
    an equal share and its valid problems (index < n) come first; and the chunk's size."""
    n_dev = len(jax.devices())
    size = per_dev * n_dev
    idx = first + np.arange(size).reshape(per_dev, n_dev).T.ravel()
    return idx.astype(np.int32), size


def _progress(total: int, show: bool | None, desc: str):
    """A tqdm bar over problems: shown when `show` is True; when None, only if the run lasts over 2 s."""
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="fit", disable=show is False, delay=0 if show else 2.0,
                leave=False)


# ---- model structure ------------------------------------------------------------------------------

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
    structure: FactorStructure = field(metadata=dict(static=True))

    def stats(self, *b) -> Stats:
        """One problem's Stats from its y-dependent parts (Zᵀy, Xᵀy, yᵀy), or from all seven parts
        (ZᵀZ, ZᵀX, Zᵀy, XᵀX, Xᵀy, yᵀy, n) when every problem has its own design."""
        if len(b) == 7:
            return Stats(*b, self.structure)
        Zty, Xty, yty = b
        return Stats(self.ZtZ, self.ZtX, Zty, self.XtX, Xty, yty, self.n, self.structure)


def _single_factor(model, what: str) -> None:
    info = model.info
    factors = {t.factor for t in info.terms}
    if len(factors) > 1:
        raise NotYetSupportedError(f"{what} supports models with one grouping factor; this model has "
                                   f"{len(factors)} ({', '.join(sorted(factors))})")


def group_sums(codes: np.ndarray, G: int, left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Σ_rows-in-g left_r right_rᵀ for every group: (G, a, b) from left (n, a), right (n, b)."""
    a, b = left.shape[1], right.shape[1]
    out = np.empty((G, a, b))
    for i in range(a):
        for j in range(b):
            out[:, i, j] = np.bincount(codes, left[:, i] * right[:, j], minlength=G)
    return out


def _target(X, Z, codes, G, layout: ThetaLayout, x0, reml) -> Target:
    return Target(jnp.asarray(group_sums(codes, G, Z, Z)), jnp.asarray(group_sums(codes, G, Z, X)),
                  jnp.asarray(X.T @ X), jnp.asarray(float(X.shape[0])), jnp.asarray(x0, dtype=float),
                  jnp.asarray(layout.lower, dtype=float), jnp.asarray(float(reml)), layout.factor(0))


# ---- simulating sufficient statistics ------------------------------------------------------------

@jax.tree_util.register_dataclass
@dataclass(frozen=True)
class Simulator:
    """Draws the y-dependent statistics of one or more target designs under a fitted model.

    Per group g the union of the columns involved, U_g = [Z_sim, Z_t, X_t, δ_t ...] (duplicates and
    zero columns dropped), has Gram Γ_g = F_gF_gᵀ (eigen-factor, rank mask `keep`). With y centred at
    target t's reference β_t, y_c = Z_sim b + ε + δ_t (δ_t = X_sim β_sim − X_t β_t, zero when nested).
    """

    lam: jax.Array        # (q_sim, q_sim) Λ of the simulating model
    sigma: jax.Array
    F: jax.Array          # (G, c, c)
    keep: jax.Array       # (G, c) 1.0 for directions with positive eigenvalue
    gram: jax.Array       # (G, c, c)
    chi2_df: jax.Array
    delta_sq: tuple       # per target: δ_tᵀδ_t
    z_sim: tuple = field(metadata=dict(static=True))
    targets: tuple = field(metadata=dict(static=True))   # per target (z_idx, x_idx, delta_idx or -1)

    def draw(self, key):
        """Standard normals z (G, q_sim), v (G, c) (masked to Γ's rank) and a χ² on `chi2_df` df for one
        replicate, from a single block of uniforms (one random-bits call keeps the compiled program small)."""
        G, c = self.keep.shape
        q = len(self.z_sim)
        n_normal = G * (q + c)
        n_pairs = -(-(n_normal + GAMMA_TRIES) // 2)
        u = jax.random.uniform(key, (2 * n_pairs + GAMMA_TRIES + 1,), dtype=self.F.dtype)
        normals = _box_muller(u[:n_pairs], u[n_pairs:2 * n_pairs])
        z = normals[:G * q].reshape(G, q)
        v = normals[G * q:n_normal].reshape(G, c) * self.keep
        chi2 = 2.0 * _gamma(0.5 * self.chi2_df, normals[n_normal:n_normal + GAMMA_TRIES],
                            u[2 * n_pairs:2 * n_pairs + GAMMA_TRIES], u[-1])
        return z, v, chi2

    def statistics(self, draws, t: int):
        """(Zᵀy_c (G, q_t), Xᵀy_c (p_t,), y_cᵀy_c) of target t for one replicate's draws."""
        z, v, chi2 = draws
        zi, xi, di = self.targets[t]
        zs = list(self.z_sim)
        b = self.sigma * jnp.sum(self.lam[None, :, :] * z[:, None, :], axis=-1)     # (G, q_sim)
        e = self.sigma * jnp.sum(self.F * v[:, None, :], axis=-1)                    # (G, c) = Uᵀε
        Gzs = self.gram[:, :, zs]                                                    # (G, c, q_sim)
        mean_part = jnp.sum(Gzs * b[:, None, :], axis=-1)                           # (G, c) = UᵀZ_sim b
        u = mean_part + e
        if di >= 0:
            u = u + self.gram[:, :, di]
        Zty = u[:, list(zi)]
        Xty = jnp.sum(u[:, list(xi)], axis=0)
        bZZb = jnp.sum(b * mean_part[:, zs])
        yty = bZZb + 2.0 * jnp.sum(b * e[:, zs]) + self.sigma ** 2 * (jnp.sum(v * v) + chi2)
        if di >= 0:
            yty = yty + 2.0 * jnp.sum(b * self.gram[:, zs, di]) + 2.0 * jnp.sum(e[:, di]) + self.delta_sq[t]
        return Zty, Xty, yty


GAMMA_TRIES = 16


def _box_muller(u1, u2):
    """Pairs of uniforms on [0, 1) → twice as many independent standard normals."""
    r = jnp.sqrt(-2.0 * jnp.log1p(-u1))
    angle = 2.0 * jnp.pi * u2
    return jnp.concatenate([r * jnp.cos(angle), r * jnp.sin(angle)])


def _gamma(shape, normals, uniforms, boost):
    """A Gamma(shape, 1) draw by Marsaglia and Tsang's squeeze-free method (shape < 1 boosted by
    U^(1/shape)), taking the first of GAMMA_TRIES proposals accepted; each is accepted with probability
    above 0.95, so all fail with probability below 1e-20. Shape 0 gives 0."""
    a = jnp.where(shape < 1.0, shape + 1.0, shape)
    d = a - 1.0 / 3.0
    c = 1.0 / jnp.sqrt(9.0 * d)
    v = (1.0 + c * normals) ** 3
    safe_v = jnp.where(v > 0, v, 1.0)
    accept = (v > 0) & (jnp.log1p(-uniforms) < 0.5 * normals ** 2 + d - d * safe_v + d * jnp.log(safe_v))
    draw = d * safe_v[jnp.argmax(accept)]
    draw = jnp.where(shape < 1.0, draw * (1.0 - boost) ** (1.0 / jnp.where(shape > 0, shape, 1.0)), draw)
    return jnp.where(shape > 0, draw, 0.0)


@dataclass
class _SimulationSource:
    """What `Simulator` was built from (numpy), to rebuild replicate responses on request."""

    simulator: Simulator
    U: np.ndarray
    codes: np.ndarray
    mean: np.ndarray
    Z_sim: np.ndarray
    row_index: pd.Index
    eig_w: np.ndarray
    eig_V: np.ndarray

    def responses(self, seed: int, which: np.ndarray) -> np.ndarray:
        sim = self.simulator
        with jax.enable_x64(True):
            keys = jax.vmap(jax.random.fold_in, (None, 0))(jax.random.PRNGKey(seed), jnp.asarray(which))
            z, v, chi2 = jax.tree_util.tree_map(np.asarray, jax.vmap(sim.draw)(keys))
        lam, sigma, keep = np.asarray(sim.lam), float(sim.sigma), np.asarray(sim.keep)
        G, c = keep.shape
        n = len(self.codes)
        # orthonormal basis per group of col(U_g): u_k = U_g V_k / sqrt(λ_k)
        basis = np.zeros((n, c))
        for g in range(G):
            rows = np.flatnonzero(self.codes == g)
            w, V = self.eig_w[g], self.eig_V[g]
            ok = keep[g] > 0
            basis[np.ix_(rows, np.flatnonzero(ok))] = self.U[rows] @ V[:, ok] / np.sqrt(w[ok])
        out = np.empty((len(which), n))
        for r, i in enumerate(which):
            b = sigma * z[r] @ lam.T
            eps_in = sigma * np.einsum("nk,nk->n", basis, v[r][self.codes])
            h = np.random.default_rng([int(seed), int(i)]).standard_normal(n)
            for g in range(G):
                rows = np.flatnonzero(self.codes == g)
                Bg = basis[rows]
                h[rows] -= Bg @ (Bg.T @ h[rows])
            norm = np.sqrt(h @ h)
            eps_out = sigma * np.sqrt(chi2[r]) * h / norm if norm > 0 else 0.0 * h
            out[r] = self.mean + np.einsum("nq,nq->n", self.Z_sim, b[self.codes]) + eps_in + eps_out
        return out


def _unique_columns(cols: list[np.ndarray]) -> tuple[np.ndarray, list[int]]:
    """Stack columns, dropping exact duplicates and all-zero columns (index −1 for those)."""
    kept, index = [], []
    for col in cols:
        if not np.any(col):
            index.append(-1)
            continue
        for k, other in enumerate(kept):
            if np.array_equal(col, other):
                index.append(k)
                break
        else:
            kept.append(col)
            index.append(len(kept) - 1)
    return np.column_stack(kept), index


def _simulator(sim_X_beta, Z_sim, lam, sigma, codes, G, targets, row_index):
    """A `Simulator` for y = X_simβ_sim + Z_sim b + ε and targets [(X_t, Z_t, β_t)]; returns it with its source."""
    cols = [Z_sim[:, j] for j in range(Z_sim.shape[1])]
    layout, deltas = [], []
    for X, Z, beta in targets:
        delta = sim_X_beta - X @ beta
        if np.max(np.abs(delta)) <= 1e-10 * max(np.max(np.abs(sim_X_beta)), 1.0):
            delta = np.zeros_like(delta)
        deltas.append(delta)
        start = len(cols)
        cols += [Z[:, j] for j in range(Z.shape[1])] + [X[:, j] for j in range(X.shape[1])] + [delta]
        layout.append((start, Z.shape[1], X.shape[1]))
    U, index = _unique_columns(cols)
    q_sim = Z_sim.shape[1]
    z_sim = tuple(index[:q_sim])
    if min(z_sim) < 0:
        raise DesignError("a random-effect column of the simulating model is zero everywhere")
    spec = []
    for (start, q, p), delta in zip(layout, deltas):
        zi = tuple(index[start:start + q])
        xi = tuple(index[start + q:start + q + p])
        if min(zi + xi) < 0:
            raise DesignError("a model column is zero everywhere")
        spec.append((zi, xi, index[start + q + p]))
    c = U.shape[1]
    gram = group_sums(codes, G, U, U)
    w, V = np.linalg.eigh(gram)
    tol = 1e-10 * np.maximum(w[:, -1:], 1e-300)
    keep = (w > tol).astype(float)
    F = V * np.sqrt(np.maximum(w, 0.0))[:, None, :] * keep[:, None, :]
    df = len(codes) - keep.sum()
    if df < 0:
        raise DesignError("the model has more parameters per group than rows")
    simulator = Simulator(jnp.asarray(lam, dtype=float), jnp.asarray(float(sigma)), jnp.asarray(F),
                          jnp.asarray(keep), jnp.asarray(gram), jnp.asarray(float(df)),
                          tuple(jnp.asarray(float(d @ d)) for d in deltas), z_sim, tuple(spec))
    source = _SimulationSource(simulator, U, codes, sim_X_beta, Z_sim, row_index, w, V)
    return simulator, source, c


# ---- the batched program -------------------------------------------------------------------------

def _fit_target(target: Target, data, n_valid, width: int, max_iter: int) -> dict:
    """Fit one target structure to a queue of (Zᵀy, Xᵀy, yᵀy) statistics and evaluate the estimates."""

    def make_args(b):
        return (target.stats(*b), target.reml)

    state = minimize_queue(sums.objective, sums.objective_derivatives, target.x0, target.lower, data,
                           make_args, n_valid, width, max_iter=max_iter)
    est = jax.vmap(lambda x, b: estimates(x, target.stats(*b), target.reml))(state.x, data)
    return dict(theta=state.x, objective=state.f, beta=est.beta, sigma=est.sigma,
                se=jnp.sqrt(jnp.diagonal(est.vcov_beta, axis1=-2, axis2=-1)),
                converged=batch_converged(state), iterations=state.iterations, grad_norm=state.grad_norm)


@partial(jax.jit, static_argnames=("width",))
def _simulated_chunk(simulator: Simulator, targets: tuple, key, idx, n_total, max_iter, width: int):
    """Replicates `idx` (< n_total are real): draw, form each target's statistics, fit. The idx axis
    is sharded over the devices; each runs its own queue."""

    def local(simulator, targets, key, idx, n_total, max_iter):
        keys = jax.vmap(jax.random.fold_in, (None, 0))(key, idx)
        draws = jax.vmap(simulator.draw)(keys)
        n_valid = jnp.sum(idx < n_total)
        out = []
        for t, target in enumerate(targets):
            data = jax.vmap(lambda d: simulator.statistics(d, t))(draws)
            data = jax.lax.optimization_barrier(data)  # keeps the draws out of the loop: compiles 2x faster
            out.append(_fit_target(target, data, n_valid, width, max_iter))
        return tuple(out)

    rep, spec = PartitionSpec(), PartitionSpec("batch")
    return jax.shard_map(local, mesh=_mesh(), in_specs=(rep, rep, rep, spec, rep, rep), out_specs=spec,
                         check_vma=False)(simulator, targets, key, idx, n_total, max_iter)


def _bytes_per_problem(G: int, q: int, p: int, batched_design: bool = False) -> int:
    """Memory one queued problem holds: its statistics and results."""
    per_group = q * q + q * p + q if batched_design else q
    return 8 * (G * per_group + (p + 2) ** 2 + 64)


def _run_simulated(simulator, targets, n, seed, chunk, progress, max_iter, desc, dims):
    """All n replicates, chunk by chunk; per-target dicts of numpy arrays (length n) and timings."""
    import time

    per_dev = _chunk_size(n, _bytes_per_problem(*dims), chunk)
    key = jax.random.PRNGKey(seed)
    sharding = NamedSharding(_mesh(), PartitionSpec("batch"))
    merged = None
    t0 = time.perf_counter()
    first, n_chunks = 0, 0
    with _progress(n, progress, desc) as bar:
        while first < n:
            idx, size = _chunk_indices(first, per_dev, n)
            out = _simulated_chunk(simulator, targets, key, jax.device_put(idx, sharding), jnp.asarray(n, jnp.int32),
                                   jnp.asarray(max_iter, jnp.int32), width=_width())
            out = jax.tree_util.tree_map(np.asarray, out)
            if merged is None:
                merged = [{name: np.empty((n,) + v.shape[1:], v.dtype) for name, v in o.items()} for o in out]
            real = idx < n
            for m, o in zip(merged, out):
                for name, v in o.items():
                    m[name][idx[real]] = v[real]
            bar.update(int(real.sum()))
            first += size
            n_chunks += 1
    elapsed = time.perf_counter() - t0
    return merged, dict(seconds=elapsed, chunk=per_dev * len(jax.devices()), chunks=n_chunks,
                        devices=len(jax.devices()))


@partial(jax.jit, static_argnames=("width",))
def _given_chunk(target: Target, data, valid, max_iter, width: int):
    """Fit problems whose statistics are given (`data`: pytree, leading axis sharded over devices;
    `valid` marks real problems, a prefix on every device)."""

    def local(target, data, valid, max_iter):
        return _fit_target(target, data, jnp.sum(valid), width, max_iter)

    rep, spec = PartitionSpec(), PartitionSpec("batch")
    return jax.shard_map(local, mesh=_mesh(), in_specs=(rep, spec, spec, rep), out_specs=spec,
                         check_vma=False)(target, data, valid, max_iter)


def _run_given(target: Target, data, n: int, chunk, progress, max_iter, desc, dims):
    """Fit n problems with given statistics (numpy pytree, leading axis n), chunk by chunk."""
    import time

    per_dev = _chunk_size(n, _bytes_per_problem(*dims), chunk)
    sharding = NamedSharding(_mesh(), PartitionSpec("batch"))
    merged, first, n_chunks = None, 0, 0
    t0 = time.perf_counter()
    with _progress(n, progress, desc) as bar:
        while first < n:
            idx, size = _chunk_indices(first, per_dev, n)
            real = idx < n
            take = np.minimum(idx, n - 1)
            piece = jax.tree_util.tree_map(lambda a: jax.device_put(np.asarray(a)[take], sharding), data)
            out = _given_chunk(target, piece, jax.device_put(real, sharding), jnp.asarray(max_iter, jnp.int32),
                               width=_width())
            out = jax.tree_util.tree_map(np.asarray, out)
            if merged is None:
                merged = {name: np.empty((n,) + v.shape[1:], v.dtype) for name, v in out.items()}
            for name, v in out.items():
                merged[name][idx[real]] = v[real]
            bar.update(int(real.sum()))
            first += size
            n_chunks += 1
    return merged, dict(seconds=time.perf_counter() - t0, chunk=per_dev * len(jax.devices()), chunks=n_chunks,
                        devices=len(jax.devices()))


# ---- bootstrap ----------------------------------------------------------------------------------

def _model_arrays(model):
    info = model.info
    return info.X, info.Z, np.asarray(info.group_codes), info.n_groups


@float64
def bootstrap(model, n: int = 1000, seed: int = 0, chunk: int | None = None, progress: bool | None = None,
              max_iter: int = 200) -> BootstrapResult:
    """Parametric bootstrap (lme4's bootMer, type "parametric", use.u = FALSE): simulate n responses
    from the fitted model, refit each (REML or ML as the model), all in one batched program.

    Returns a `BootstrapResult`; `result.confint(level)` gives percentile intervals. Deterministic for
    a seed, whatever the chunk size or number of devices. `chunk` overrides the problems per chunk
    (default: from free memory); `progress` forces the progress bar on or off (default: on for runs
    of several chunks that take over a second).
    """
    import time

    n = _check_n(n)
    _single_factor(model, "bootstrap")
    info = model.info
    X, Z, codes, G = _model_arrays(model)
    beta = model.fixef.to_numpy()
    t0 = time.perf_counter()
    simulator, source, _ = _simulator(X @ beta, Z, model.lambda_matrix, model.sigma, codes, G, [(X, Z, beta)],
                                      info.row_index)
    target = _target(X, Z, codes, G, model.layout, model.theta, model.reml)
    setup = time.perf_counter() - t0
    (out,), timing = _run_simulated(simulator, (target,), n, seed, chunk, progress, max_iter, "bootstrap",
                                    (G, info.q, info.p))
    timing["setup_seconds"] = setup
    fixef = beta[None, :] + out["beta"]
    table = np.column_stack([fixef, out["sigma"], model.layout.sd_cor(out["theta"], out["sigma"])])
    columns = list(model.fixef.index) + ["sigma"] + list(model.varcorr_names())
    replicates = pd.DataFrame(table, columns=columns)
    replicates.index.name = "replicate"
    result = BootstrapResult(replicates, out["theta"], out["converged"], out["objective"], out["iterations"],
                             int(seed), timing, source)
    if result.n_failed:
        warnings.warn(f"{result.n_failed} of {n} bootstrap replicates did not converge; they are flagged in "
                      "`converged` and left out of confint()", BatchWarning, stacklevel=3)
    return result


def _check_n(n) -> int:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    return int(n)


# ---- bootstrap likelihood-ratio test --------------------------------------------------------------

def _ml(model):
    """The model refitted by ML when it was fitted by REML (as pbkrtest and anova do)."""
    if not model.reml:
        return model
    from .results import fit_design

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fit_design(model.design, REML=False)


def _in_span(A: np.ndarray, B: np.ndarray, tol: float = 1e-8) -> bool:
    """Whether every column of A lies in the column space of B."""
    if A.shape[1] == 0:
        return True
    coef = np.linalg.lstsq(B, A, rcond=None)[0]
    resid = A - B @ coef
    return bool(np.all(np.linalg.norm(resid, axis=0) <= tol * np.maximum(np.linalg.norm(A, axis=0), 1.0)))


def _check_nested(small, big) -> None:
    si, bi = small.info, big.info
    if si.nobs != bi.nobs or not np.array_equal(si.y, bi.y) or not si.row_index.equals(bi.row_index):
        raise DesignError("pb_test needs both models fitted to the same data and response "
                          f"({si.nobs} vs {bi.nobs} rows used)")
    if si.factor != bi.factor or not np.array_equal(si.group_codes, bi.group_codes):
        raise DesignError(f"pb_test needs the same grouping factor in both models ({si.factor!r} vs {bi.factor!r})")
    df = big.n_params - small.n_params
    if df <= 0:
        raise DesignError(f"the small model has {small.n_params} parameters and the big one {big.n_params}; "
                          "pass the models as pb_test(small, big)")
    if not _in_span(si.X, bi.X):
        raise DesignError("the models are not nested: the small model's fixed effects are not in the big model's")
    # per group, adding the small model's Z columns to the big model's must not raise the rank
    qb = bi.Z.shape[1]
    codes = np.asarray(si.group_codes)
    gram = group_sums(codes, si.n_groups, np.column_stack([bi.Z, si.Z]), np.column_stack([bi.Z, si.Z]))

    def rank(C):
        w = np.linalg.eigvalsh(C)
        return np.sum(w > 1e-10 * np.maximum(w[:, -1:], 1e-300), axis=1)

    if np.any(rank(gram) > rank(gram[:, :qb, :qb])):
        raise DesignError("the models are not nested: the small model's random-effect columns are not in "
                          "the big model's")


@float64
def pb_test(small, big, n: int = 1000, seed: int = 0, chunk: int | None = None,
            progress: bool | None = None, max_iter: int = 200) -> PBTest:
    """Parametric bootstrap likelihood-ratio test of nested models (pbkrtest's PBmodcomp).

    Both models are refitted by ML when fitted by REML; n responses are simulated from the small
    model's ML fit and both models refitted to each in one batched program. The statistic is
    2 (logLik_big − logLik_small); the χ² p-value uses df = the difference in parameter counts.
    """
    import scipy.stats

    n = _check_n(n)
    for m, role in ((small, "small"), (big, "big")):
        if not hasattr(m, "info") or not hasattr(m, "fixef"):
            raise TypeError(f"pb_test needs fitted models (hj.lmer); the {role} model is {type(m).__name__}")
        _single_factor(m, "pb_test")
    _check_nested(small, big)
    small_ml, big_ml = _ml(small), _ml(big)
    stat = max(small_ml.objective - big_ml.objective, 0.0)
    df = big.n_params - small.n_params
    X_s, Z_s, codes, G = _model_arrays(small_ml)
    X_b, Z_b = big_ml.info.X, big_ml.info.Z
    beta_s = small_ml.fixef.to_numpy()
    mean = X_s @ beta_s
    beta_b = np.linalg.lstsq(X_b, mean, rcond=None)[0]
    simulator, _, _ = _simulator(mean, Z_s, small_ml.lambda_matrix, small_ml.sigma, codes, G,
                                 [(X_s, Z_s, beta_s), (X_b, Z_b, beta_b)], small.info.row_index)
    targets = (_target(X_s, Z_s, codes, G, small_ml.layout, small_ml.theta, False),
               _target(X_b, Z_b, codes, G, big_ml.layout, big_ml.theta, False))
    dims = (G, max(small.info.q, big.info.q), big.info.p)
    (out_s, out_b), _ = _run_simulated(simulator, targets, n, seed, chunk, progress, max_iter, "pb_test", dims)
    ref = np.maximum(out_s["objective"] - out_b["objective"], 0.0)
    converged = out_s["converged"] & out_b["converged"]
    used = ref[converged]
    positive = used[used > 0]
    p_boot = (1 + np.sum(positive > stat)) / (1 + positive.size)
    p_chisq = float(scipy.stats.chi2.sf(stat, df))
    n_failed = int(np.sum(~converged))
    if n_failed:
        warnings.warn(f"{n_failed} of {n} bootstrap refits did not converge and were left out", BatchWarning,
                      stacklevel=3)
    return PBTest(float(stat), int(df), p_chisq, float(p_boot), ref, converged, n_failed)


# ---- per-group least squares (lmList) ------------------------------------------------------------

def _fast_codes(values: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """`design.factor_codes` (R's level order), in O(n) for integer columns with a compact range."""
    if pd.api.types.is_integer_dtype(values) and not isinstance(values.dtype, pd.CategoricalDtype) and len(values):
        v = values.to_numpy()
        lo, hi = int(v.min()), int(v.max())
        if hi - lo < 4 * len(v) + 1024:
            present = np.bincount(v - lo, minlength=hi - lo + 1) > 0
            rank = np.cumsum(present) - 1
            return rank[v - lo].astype(np.int64), np.array([str(lo + i) for i in np.flatnonzero(present)],
                                                           dtype=object)
    return factor_codes(values)


def _plain_columns(terms, frame: pd.DataFrame):
    """X's columns when every term is a numeric column (the intercept as a scalar 1), taken straight
    from the frame; None when the general model matrix is needed."""
    names = [t[0].name for t in terms.terms if len(t) == 1 and isinstance(t[0], Name)]
    if len(names) != len(terms.terms) or not (names or terms.intercept) or \
            any(not pd.api.types.is_numeric_dtype(frame[c]) or frame[c].dtype == bool for c in names):
        return None
    cols = ([1.0] if terms.intercept else []) + [frame[c].to_numpy(dtype=float) for c in names]
    return cols, (["(Intercept)"] if terms.intercept else []) + names


def _aligned_empty(shape) -> np.ndarray:
    """An uninitialised float64 array on a 64-byte boundary: jax.device_put takes it without a copy."""
    nbytes = int(np.prod(shape)) * 8
    raw = np.empty(nbytes + 64, dtype=np.uint8)
    offset = (-raw.ctypes.data) % 64
    return raw[offset:offset + nbytes].view(np.float64).reshape(shape)


def _cholesky_lists(A: list[list]) -> list[list]:
    """Lower Cholesky factor of a small matrix held as nested lists of (G,) arrays (unit stride per entry)."""
    k = len(A)
    L = [[None] * k for _ in range(k)]
    for j in range(k):
        L[j][j] = jnp.sqrt(A[j][j] - sum((L[j][m] ** 2 for m in range(j)), 0.0))
        for i in range(j + 1, k):
            L[i][j] = (A[i][j] - sum((L[i][m] * L[j][m] for m in range(j)), 0.0)) / L[j][j]
    return L


def _forward(L, b: list) -> list:
    out = []
    for i in range(len(b)):
        out.append((b[i] - sum((L[i][m] * out[m] for m in range(i)), 0.0)) / L[i][i])
    return out


def _backward(L, b: list) -> list:
    k = len(b)
    out = [None] * k
    for i in reversed(range(k)):
        out[i] = (b[i] - sum((L[m][i] * out[m] for m in range(i + 1, k)), 0.0)) / L[i][i]
    return out


@jax.jit
def _ols_bucket(W, n):
    """Least squares per group of a padded bucket W = [X y] (G, rows, p + 1), zero rows padding.

    One pass forms every group's [X y]ᵀ[X y]; the normal equations are solved by Cholesky and
    refined once from the residuals (a second pass), which makes them as accurate as QR for
    well-conditioned X. Returns β, diag((XᵀX)⁻¹), the residual sum of squares, and full-rank flags.
    The p × p algebra is written out on (G,) vectors (entries with unit stride).
    """
    p = W.shape[-1] - 1
    C = jnp.einsum("gni,gnj->ijg", W, W)
    A = [[C[i, j] for j in range(p)] for i in range(p)]
    L = _cholesky_lists(A)
    # R's lm aliases a column whose residual on the earlier ones is below 1e-7 of its norm
    full_rank = (n >= p)
    for j in range(p):
        full_rank = full_rank & (L[j][j] ** 2 > 1e-14 * A[j][j]) & (A[j][j] > 0)

    def solve(b):
        return _backward(L, _forward(L, b))

    beta0 = solve([C[i, p] for i in range(p)])
    # residuals y − Xβ₀ = W·[−β₀, 1], and Wᵀr, without slicing (copying) X out of W
    resid = jnp.einsum("gni,ig->gn", W, jnp.stack([-b for b in beta0] + [jnp.ones_like(beta0[0])]))
    Xtr_all = jnp.einsum("gni,gn->ig", W, resid)
    Xtr = [Xtr_all[i] for i in range(p)]
    delta = solve(Xtr)
    beta = jnp.stack([b0 + d for b0, d in zip(beta0, delta)], axis=-1)
    # |r − Xδ|² without another pass: the correction terms are tiny next to |r|², no cancellation
    rss = jnp.sum(resid * resid, axis=-1) - 2.0 * sum(d * x for d, x in zip(delta, Xtr)) \
        + sum(delta[i] * A[i][j] * delta[j] for i in range(p) for j in range(p))
    # diag((XᵀX)⁻¹) = column sums of squares of L⁻¹
    unit = [jnp.zeros_like(A[0][0])] * p
    var_unit = []
    Linv_cols = [_forward(L, [u if i != j else u + 1.0 for i, u in enumerate(unit)]) for j in range(p)]
    var_unit = jnp.stack([sum(v * v for v in col) for col in Linv_cols], axis=-1)
    nan = jnp.nan
    ok = full_rank[:, None]
    return (jnp.where(ok, beta, nan), jnp.where(ok, var_unit, nan),
            jnp.where(full_rank, jnp.maximum(rss, 0.0), nan), full_rank)


def _groups(frame: pd.DataFrame, group: tuple[str, ...]):
    """Level labels (R's order), rows per level, each level's first row in sorted order, and the
    sorting permutation of the rows (None when they are already grouped in level order)."""
    col = frame[group[0]]
    if len(group) == 1 and pd.api.types.is_integer_dtype(col) and not isinstance(col.dtype, pd.CategoricalDtype):
        v = col.to_numpy()
        if len(v) and np.all(v[1:] >= v[:-1]):     # already sorted: only the boundaries are needed
            starts = np.concatenate([[0], np.flatnonzero(v[1:] != v[:-1]) + 1])
            sizes = np.diff(np.concatenate([starts, [len(v)]]))
            return v[starts].astype(str).astype(object), sizes, starts, None
    codes, levels = _fast_codes(col)
    for name in group[1:]:
        c2, l2 = _fast_codes(frame[name])
        used, codes = np.unique(codes * len(l2) + c2, return_inverse=True)
        levels = np.array([f"{levels[u // len(l2)]}:{l2[u % len(l2)]}" for u in used], dtype=object)
    sizes = np.bincount(codes, minlength=len(levels))
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    order = None if np.all(codes[1:] >= codes[:-1]) else np.argsort(codes, kind="stable")
    return levels, sizes, starts, order


@float64
def lmlist(formula: str, data: pd.DataFrame, pool: bool = True) -> LmList:
    """One least-squares regression per group (lme4's lmList): `hj.lmlist("Reaction ~ Days | Subject", d)`.

    All groups are fitted at once (padded into a few size buckets). Standard errors use the residual
    sd pooled over the groups (`pool=True`, lmList's default) or each group's own (`pool=False`).
    Groups with fewer rows than coefficients or with collinear columns get NaN rows, are listed in
    `.failed` and reported in a warning; a group with exactly as many rows as coefficients gets
    coefficients, but no residual sd of its own. Rows with missing values in the used columns are
    dropped (with a warning).
    """
    response, terms, group = parse_lmlist(formula)
    if not isinstance(data, pd.DataFrame):
        raise DesignError(f"data must be a pandas DataFrame, got {type(data).__name__}")
    used = list(dict.fromkeys(variables(response) + [v for a in terms.atoms for v in variables(a)] + list(group)))
    check_columns(used, data)
    plain = _plain_columns(terms, data)
    frame = data
    keep = None
    if data[used].isna().to_numpy().any():
        keep = data[used].notna().all(axis=1).to_numpy()
        warnings.warn(f"{int((~keep).sum())} row(s) with missing values in {', '.join(used)} were dropped",
                      stacklevel=3)
        frame = data.loc[keep]
        plain = _plain_columns(terms, frame) if plain is not None else None
    y = response_values(response, frame)
    if plain is not None:
        columns, names = plain
    else:
        X, spec = model_matrix(terms, frame)
        columns, names = [X[:, j] for j in range(X.shape[1])], list(spec.names)
    columns = columns + [y]
    levels, sizes, starts, order = _groups(frame, group)
    G, p = len(levels), len(names)
    beta, var_unit, rss, ok = (np.full((G, p), np.nan), np.full((G, p), np.nan), np.full(G, np.nan),
                               np.zeros(G, bool))
    lengths = np.array([bucket_length(s) for s in range(sizes.max() + 1)])[sizes]
    for length in np.unique(lengths):
        groups = np.flatnonzero(lengths == length)
        width = int(sizes[groups].max())
        W = _aligned_empty((len(groups), width, p + 1))   # [X y], filled column by column
        if order is None and np.all(sizes[groups] == width) and np.all(np.diff(groups) == 1):
            rows = slice(starts[groups[0]], starts[groups[0]] + width * len(groups))
            for j, col in enumerate(columns):
                W[..., j] = col if np.ndim(col) == 0 else col[rows].reshape(len(groups), width)
        else:
            pos = np.arange(width)[None, :]
            valid = pos < sizes[groups][:, None]
            idx = np.where(valid, starts[groups][:, None] + pos, 0)
            if order is not None:
                idx = order[idx]
            for j, col in enumerate(columns):
                W[..., j] = np.where(valid, col if np.ndim(col) == 0 else col[idx], 0.0)
        out = _ols_bucket(jax.device_put(W), jnp.asarray(sizes[groups]))
        beta[groups], var_unit[groups], rss[groups], ok[groups] = (np.asarray(a) for a in out)
    df = np.maximum(sizes - p, 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        sigma = np.where(ok & (df > 0), np.sqrt(rss / np.where(df > 0, df, 1)), np.nan)
        pooled = np.sqrt(np.sum(rss[ok]) / np.sum(df[ok])) if np.sum(df[ok]) > 0 else np.nan
        scale = np.full(G, pooled) if pool else sigma
        se = np.sqrt(var_unit) * scale[:, None]
    index = pd.Index(levels, name=":".join(group))
    reasons = np.where(sizes < p, f"fewer than {p} rows", "collinear columns within the group")
    failed = pd.Series(reasons[~ok], index=index[~ok], name="reason", dtype=object)
    if len(failed):
        shown = ", ".join(map(str, failed.index[:5])) + (", ..." if len(failed) > 5 else "")
        warnings.warn(f"{len(failed)} of {G} groups could not be fitted (NaN rows in the result): {shown}",
                      BatchWarning, stacklevel=3)
    return LmList(pd.DataFrame(beta, index=index, columns=names), pd.DataFrame(se, index=index, columns=names),
                  pd.Series(sigma, index=index, name="sigma"), pd.Series(df, index=index, name="df_resid"),
                  pd.Series(sizes, index=index, name="nobs"), failed, float(pooled))


# ---- one model, many data sets or responses -----------------------------------------------------

def _random_matrix(info, frame: pd.DataFrame) -> np.ndarray:
    return np.column_stack([spec.matrix(frame)[:, list(cols)] for spec, cols in info.random_specs])


def _fixed_matrix(info, frame: pd.DataFrame) -> np.ndarray:
    X = info.fixed_spec.matrix(frame)
    return X[:, [info.fixed_spec.names.index(n) for n in info.fixed_names]]


def _check_frame(data, i: int, used: list[str]) -> pd.DataFrame:
    if not isinstance(data, pd.DataFrame):
        raise DesignError(f"data set {i} is a {type(data).__name__}, not a pandas DataFrame")
    absent = [c for c in used if c not in data.columns]
    if absent:
        raise DesignError(f"data set {i} lacks column {absent[0]!r}")
    frame = data[used]
    return frame.loc[frame.notna().all(axis=1).to_numpy()]


def _ols_per_problem(XtX: np.ndarray, Xty: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """β₀ per problem (m, p) and which problems have a full-rank X (R's lm rule, 1e-7 on column norms)."""
    p = XtX.shape[-1]
    ok = np.ones(len(XtX), bool)
    beta = np.zeros((len(XtX), p))
    for i in range(len(XtX)):
        try:
            L = np.linalg.cholesky(XtX[i])
        except np.linalg.LinAlgError:
            ok[i] = False
            continue
        if np.any(np.diag(L) ** 2 <= 1e-14 * np.maximum(np.diag(XtX[i]), 1e-300)):
            ok[i] = False
            continue
        beta[i] = np.linalg.solve(XtX[i], Xty[i])
    return beta, ok


def _table(info, fixed_names, fixef, se, out, extra: dict) -> pd.DataFrame:
    """One row per fit: fixed effects, their standard errors, σ, sds and correlations, objective, flags."""
    columns = {name: fixef[:, j] for j, name in enumerate(fixed_names)}
    columns.update({f"se_{name}": se[:, j] for j, name in enumerate(fixed_names)})
    columns["sigma"] = out["sigma"]
    layout = theta_layout(info.terms)
    vc = layout.sd_cor(out["theta"], out["sigma"])
    columns.update({name: vc[:, j] for j, name in enumerate(layout.varcorr_names())})
    columns["objective"] = out["objective"]
    columns["converged"] = out["converged"]
    columns["iterations"] = out["iterations"]
    columns.update(extra)
    return pd.DataFrame(columns)


@float64
def fit_many(formula: str, datasets, responses=None, REML: bool = True, chunk: int | None = None,
             progress: bool | None = None, max_iter: int = 200) -> pd.DataFrame:
    """Fit one model structure to many data sets, or to many responses, in one batched program.

    `fit_many(formula, [df1, df2, ...])`: each DataFrame its own design (its own groups and rows);
    the model matrices follow the first one's coding. `fit_many(formula, data, responses=Y)`: one
    design, Y (n × m array, or DataFrame of m columns, rows as `data`) replacing the response.

    Returns one row per fit: fixed effects, `se_<name>` (their standard errors), `sigma`, the sds
    and correlations (lme4's confint(oldNames=FALSE) names), `objective` (REML criterion or
    deviance), `converged`, `iterations`, and `nobs`/`ngroups`. Fits that cannot be made (X rank
    deficient in that data set, fewer than two groups) are NaN rows with converged False, reported
    in a warning.
    """
    if responses is not None:
        return _fit_responses(formula, datasets, responses, REML, chunk, progress, max_iter)
    if isinstance(datasets, pd.DataFrame):
        raise TypeError("fit_many needs a list of DataFrames, or one DataFrame and responses= (an n × m array)")
    datasets = list(datasets)
    if not datasets:
        raise ValueError("fit_many needs at least one data set")
    template = build_design(formula, datasets[0])
    info = template.info
    _single_factor(template, "fit_many")
    used = info.parsed.variables
    frames = [_check_frame(d, i, used) for i, d in enumerate(datasets)]
    m = len(frames)
    sizes = np.array([len(f) for f in frames])
    big = pd.concat(frames, ignore_index=True)
    ds = np.repeat(np.arange(m), sizes)
    y = response_values(info.parsed.response_node, big)
    X, Z = _fixed_matrix(info, big), _random_matrix(info, big)
    codes = np.zeros(len(big), np.int64)
    for col in info.parsed.random[0].group:
        c, labels = factor_codes(big[col])
        codes = codes * len(labels) + c
    keys, local = np.unique(ds * (codes.max() + 1) + codes, return_inverse=True)
    key_ds = keys // (codes.max() + 1)
    n_groups = np.bincount(key_ds, minlength=m)
    local = local - np.searchsorted(key_ds, np.arange(m))[ds]
    G, p, q = int(n_groups.max()), X.shape[1], Z.shape[1]
    XtX = group_sums(ds, m, X, X)
    beta0, ok = _ols_per_problem(XtX, group_sums(ds, m, X, y[:, None])[:, :, 0])
    ok &= (n_groups >= 2) & (sizes > p)
    yc = y - np.einsum("np,np->n", X, beta0[ds])
    slot = ds * G + local
    data = (group_sums(slot, m * G, Z, Z).reshape(m, G, q, q), group_sums(slot, m * G, Z, X).reshape(m, G, q, p),
            group_sums(slot, m * G, Z, yc[:, None]).reshape(m, G, q), XtX,
            group_sums(ds, m, X, yc[:, None])[:, :, 0], np.bincount(ds, yc * yc, minlength=m), sizes.astype(float))
    if not ok.all():   # give the failed problems a harmless stand-in (a good one's statistics); NaN after
        stand_in = int(np.flatnonzero(ok)[0]) if ok.any() else None
        if stand_in is None:
            raise DesignError("no data set can be fitted (rank-deficient X or fewer than two groups in every one)")
        data = tuple(np.where(ok.reshape((m,) + (1,) * (a.ndim - 1)), a, a[stand_in]) for a in data)
    layout = theta_layout(info.terms)
    empty = jnp.zeros((0,))
    target = Target(empty, empty, empty, empty, jnp.asarray(layout.start(), dtype=float),
                    jnp.asarray(layout.lower, dtype=float), jnp.asarray(float(REML)), layout.factor(0))
    out, _ = _run_given(target, data, m, chunk, progress, max_iter, "fit_many", (G, q, p, True))
    out = _blank_failed(out, ok)
    fixef = beta0 + out["beta"]
    fixef[~ok] = np.nan
    table = _table(info, info.fixed_names, fixef, out["se"], out, {"nobs": sizes, "ngroups": n_groups})
    _report_failed(table, ok, "data set")
    return table


def _blank_failed(out: dict, ok: np.ndarray) -> dict:
    out = dict(out)
    for name, v in out.items():
        if name == "converged":
            out[name] = v & ok
        elif v.dtype.kind == "f":
            v = v.copy()
            v[~ok] = np.nan
            out[name] = v
    return out


def _report_failed(table: pd.DataFrame, ok: np.ndarray, what: str) -> None:
    bad = np.flatnonzero(~ok)
    failed = int((~table["converged"].to_numpy()).sum())
    if failed:
        shown = ", ".join(str(table.index[i]) for i in bad[:5])
        detail = f" ({len(bad)} could not be fitted: {shown}{', ...' if len(bad) > 5 else ''})" if len(bad) else ""
        warnings.warn(f"{failed} of {len(table)} fits did not converge{detail}; they are flagged in 'converged'",
                      BatchWarning, stacklevel=4)


def _fit_responses(formula, data, responses, REML, chunk, progress, max_iter) -> pd.DataFrame:
    if not isinstance(data, pd.DataFrame):
        raise TypeError("with responses=, data must be one DataFrame")
    names = list(responses.columns) if isinstance(responses, pd.DataFrame) else None
    Y = np.asarray(responses, dtype=float)
    if Y.ndim == 1:
        Y = Y[:, None]
    if Y.ndim != 2 or Y.shape[0] != len(data):
        raise DesignError(f"responses must be an n × m array with n = {len(data)} rows (as data); got shape "
                          f"{np.shape(responses)}")
    parsed = parse_formula(formula)
    frame = data.assign(**{v: Y[:, 0] for v in parsed.response_variables if v not in data.columns})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # the template's own response does not matter
        design = build_design(formula, frame)
    info = design.info
    _single_factor(design, "fit_many")
    keep = frame[info.parsed.variables].notna().all(axis=1).to_numpy()
    if keep.sum() != info.nobs:
        raise DesignError("cannot align the responses with the rows used")
    Y = Y[keep]
    if not np.all(np.isfinite(Y)):
        raise DesignError("responses must be finite on the rows used (rows with missing predictors are dropped)")
    X, Z, codes, G = info.X, info.Z, np.asarray(info.group_codes), info.n_groups
    m = Y.shape[1]
    B0 = np.linalg.lstsq(X, Y, rcond=None)[0]              # (p, m)
    Yc = Y - X @ B0
    data_y = (np.moveaxis(group_sums(codes, G, Z, Yc), -1, 0), (X.T @ Yc).T, np.sum(Yc * Yc, axis=0))
    layout = theta_layout(info.terms)
    target = _target(X, Z, codes, G, layout, layout.start(), REML)
    out, _ = _run_given(target, data_y, m, chunk, progress, max_iter, "fit_many", (G, info.q, info.p))
    table = _table(info, info.fixed_names, B0.T + out["beta"], out["se"], out,
                   {"nobs": np.full(m, info.nobs), "ngroups": np.full(m, G)})
    if names is not None:
        table.index = pd.Index(names)
    _report_failed(table, np.ones(m, bool), "response")
    return table
