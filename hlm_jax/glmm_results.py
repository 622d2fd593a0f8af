"""`glmer()` and the fitted GLMM: lme4's results API (fixef, vcov, ranef, predict, residuals, summary)."""
from __future__ import annotations

import html
import math
from functools import cached_property
from statistics import NormalDist

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from .design import NotYetSupportedError, with_response
from .fit import ModelFit
from .glmm import (GlmmData, build_glmm, fit_held, fit_problem, lower_bounds, make_problem, separation_check,
                   start_values)
from .inference.profile import end_point
from .likelihood.lmm import Estimates
from .messages import warn
from .model.family import make_family
from .model.layout import theta_layout
from .optimize import summarize
from .precision import float64
from .report import fixed_correlation, table_text as table, with_timing
from .results import LmerModel


def _batched():
    """hlm_jax.glmm_batch, imported where a bootstrap, pb_test or fit_many asks for it: with it come
    hlm_jax.batch and scipy.stats, 1.5-1.9 s of a fresh process's first glmer otherwise (python -X importtime)."""
    from . import glmm_batch
    return glmm_batch


GLMM_METHOD = "projected Newton over (θ, β), exact gradient and Hessian through the Laplace mode"


@with_timing
@float64
def glmer(formula: str, data: pd.DataFrame, family="binomial", weights=None, offset=None, nAGQ: int = 1,
          link: str | None = None, max_iter: int = 200) -> "GlmerModel":
    """Fit a generalized linear mixed model by the Laplace approximation (nAGQ=1) or adaptive
    Gauss-Hermite quadrature (nAGQ > 1, one scalar random effect), as lme4's glmer.

    family: "binomial", "poisson", "gaussian" or a `hj.families.Family`; link overrides its link.
    Binomial responses: 0/1 or logical, a proportion with weights= (trials), or cbind(successes, failures).
    weights: prior weights (a column name or an array); offset: a column name, an array, or offset(...) terms.
    """
    fam = make_family(family, link)
    gd = build_glmm(formula, data, fam, weights, offset)
    info = gd.design.info
    x0, glm_converged = start_values(gd)
    if not glm_converged:   # the linear program only runs when the GLM fit hints at separation
        separation_check(info.X, gd.y, gd.w, info.fixed_names, fam)
    return fit_glmm(gd, nAGQ, max_iter, x0)


@with_timing
@float64
def fit_glmm(gd: GlmmData, nAGQ: int = 1, max_iter: int = 200, x0=None) -> "GlmerModel":
    """Fit a GLMM whose data are already built (also used with a new response), from x0 or the GLM fit."""
    problem = make_problem(gd, n_agq=int(nAGQ))
    x0 = start_values(gd)[0] if x0 is None else x0
    x0, lower = np.asarray(x0, float), lower_bounds(gd)
    state, H, modes = fit_problem(problem, x0, lower, max_iter=max_iter)
    model = GlmerModel(gd, jax.tree_util.tree_map(np.asarray, state), np.asarray(H),
                       jax.tree_util.tree_map(np.asarray, modes), nAGQ)
    model.warn_if_problematic()
    return model


class GlmerModel(LmerModel):
    """A fitted GLMM. Names follow lme4 (fixef, ranef, VarCorr → varcorr, ...); σ is 1 unless the family has
    a dispersion (Gaussian)."""

    def __init__(self, gd: GlmmData, state, hessian: np.ndarray, modes, nAGQ: int = 1):
        info = gd.design.info
        self.gd = gd
        self.family = gd.family
        self.nAGQ = nAGQ
        layout = theta_layout(info.terms)
        n_theta, p = layout.size, info.p
        x = np.asarray(state.x)
        self._x = x
        self._hessian = hessian
        sigma = float(np.exp(x[-1])) if gd.family.has_dispersion else 1.0
        vcov = self._vcov_from_hessian(hessian, n_theta, p, x[:n_theta], layout.lower)
        est = Estimates(x[n_theta:n_theta + p], np.asarray(sigma), vcov, None, None, np.asarray(state.f))
        raw = ModelFit(state._replace(x=x[:n_theta]), est, modes.modes, modes.covs)
        super().__init__(gd.design, False, raw, np.zeros(p))
        self.opt = summarize(state, method=GLMM_METHOD)

    @staticmethod
    def _vcov_from_hessian(H, n_theta, p, theta, lower) -> np.ndarray:
        """cov(β̂) = 2 [H⁻¹]_ββ from the deviance's Hessian over (θ, β) (lme4's use.hessian=TRUE); θ at its
        bound is held fixed (its row dropped)."""
        keep = np.concatenate([~(theta <= lower + 1e-10), np.ones(H.shape[0] - n_theta, bool)])
        Hk = H[np.ix_(keep, keep)]
        inv = np.linalg.inv(Hk)
        start = int(keep[:n_theta].sum())
        return 2.0 * inv[start:start + p, start:start + p]

    # ---- fit statistics ---------------------------------------------------------------------
    @property
    def objective(self) -> float:
        """−2 log-likelihood (Laplace or adaptive Gauss-Hermite) at the optimum."""
        return float(self._raw.est.objective)

    @property
    def n_params(self) -> int:
        return len(self.fixef) + len(self.theta) + int(self.family.has_dispersion)

    @property
    def deviance(self) -> float:
        """lme4's deviance(glmer): the sum of squared deviance residuals at the conditional modes."""
        return float(np.sum(self.residuals("deviance").to_numpy() ** 2))

    @property
    def df_resid(self) -> int:
        return self.nobs - self.n_params

    # ---- variance components ------------------------------------------------------------------
    @cached_property
    def varcorr(self) -> pd.DataFrame:
        """lme4's as.data.frame(VarCorr(m)); a residual row only for families with a dispersion."""
        table_ = LmerModel.varcorr.func(self)
        return table_ if self.family.has_dispersion else table_[table_["grp"] != "Residual"].reset_index(drop=True)

    # ---- predictions and residuals -------------------------------------------------------------
    def linear_predictor(self) -> np.ndarray:
        """η = offset + Xβ̂ + Zb̂ for the rows used in the fit."""
        info = self.info
        return self.gd.offset + info.X @ self.fixef.to_numpy() + self._row_random_part(
            [f.Z for f in info.factors], [f.codes for f in info.factors])

    @float64
    def fitted(self) -> pd.Series:
        """Fitted means μ̂ (the response scale), as lme4's fitted()."""
        mu = np.asarray(self.family.link.linkinv(jnp.asarray(self.linear_predictor())))
        return pd.Series(mu, index=self.info.row_index, name="fitted")

    @float64
    def predict(self, newdata: pd.DataFrame | None = None, re: bool = True, type: str = "link",
                offset=None) -> pd.Series:
        """Predictions on the link (default, as lme4) or response scale; re=False for the population level.
        New data take the offset from `offset` (an array or column name), else none."""
        if type not in ("link", "response"):
            raise ValueError(f"type must be 'link' or 'response', not {type!r}")
        if newdata is None:
            eta = self.linear_predictor() if re else self.gd.offset + self.info.X @ self.fixef.to_numpy()
            index = self.info.row_index
        else:
            eta = LmerModel.predict(self, newdata, re).to_numpy()
            if offset is not None:
                eta = eta + (newdata[offset].to_numpy(float) if isinstance(offset, str) else np.asarray(offset, float))
            index = newdata.index
        values = np.asarray(self.family.link.linkinv(jnp.asarray(eta))) if type == "response" else eta
        return pd.Series(values, index=index, name="predicted")

    @float64
    def residuals(self, type: str = "deviance") -> pd.Series:
        """Residuals as lme4's residuals(): "deviance" (default), "pearson", "response" or "working"."""
        y, w = self.gd.y, self.gd.w
        mu = self.fitted().to_numpy()
        fam = self.family
        if type == "response":
            r = y - mu
        elif type == "pearson":
            r = (y - mu) * np.sqrt(w) / np.sqrt(np.asarray(fam.variance(jnp.asarray(mu))))
        elif type == "deviance":
            d = np.asarray(fam.unit_deviance(jnp.asarray(y), jnp.asarray(mu), jnp.asarray(w)))
            r = np.sign(y - mu) * np.sqrt(np.maximum(d, 0.0))
        elif type == "working":
            eta = self.linear_predictor()
            r = (y - mu) / np.asarray(fam.link.mu_eta(jnp.asarray(eta)))
        else:
            raise ValueError(f"unknown residual type {type!r}; use deviance, pearson, response or working")
        return pd.Series(r, index=self.info.row_index, name="residuals")

    @float64
    def simulate(self, nsim: int = 1, seed: int = 0) -> pd.DataFrame:
        """nsim responses drawn from the fitted model (new random effects, then the family), on the
        response's scale (proportions for binomial: multiply by the trials for counts)."""
        return pd.DataFrame(np.asarray(self.simulate_array(nsim, seed)).T, index=self.info.row_index,
                            columns=[f"sim_{i + 1}" for i in range(nsim)])

    def simulate_array(self, nsim: int, seed: int) -> jax.Array:
        info = self.info
        key_b, key_y = jax.random.split(jax.random.PRNGKey(seed))
        eta = jnp.asarray(self.gd.offset + info.X @ self.fixef.to_numpy())[None, :]
        for k, (f, lam) in enumerate(zip(info.factors, self.lambda_blocks)):
            u = jax.random.normal(jax.random.fold_in(key_b, k), (nsim, f.n_levels, f.q))
            eta = eta + jnp.einsum("nq,snq->sn", jnp.asarray(f.Z), (u @ jnp.asarray(lam).T * self.sigma)[:, f.codes])
        mu = self.family.link.linkinv(eta)
        return self.family.simulate(key_y, mu, jnp.asarray(self.gd.w)[None, :], self.sigma)

    # ---- tables -------------------------------------------------------------------------------
    def tidy(self, effects: str = "fixed", ddf: str | None = None) -> pd.DataFrame:
        """Fixed effects with Wald z tests (lme4's summary): term, estimate, std_error, statistic, p_value;
        effects="ran_pars" / "ran_vals" as lmer's (no residual sd unless the family has a dispersion)."""
        if ddf is not None:
            raise ValueError("denominator degrees of freedom are for linear mixed models; GLMMs use z tests")
        if effects != "fixed":
            table_ = LmerModel.tidy(self, effects)
            keep = self.family.has_dispersion or effects != "ran_pars"
            return table_ if keep else table_[table_["group"] != "Residual"].reset_index(drop=True)
        se = self.std_errors
        z = (self.fixef / se).to_numpy()
        return pd.DataFrame({"term": self.fixef.index, "estimate": self.fixef.to_numpy(), "std_error": se.to_numpy(),
                             "statistic": z, "p_value": [math.erfc(abs(v) / math.sqrt(2.0)) for v in z]})

    def icc(self):
        raise NotYetSupportedError("icc() is for linear mixed models; a GLMM's needs a latent-scale variance")

    def r2(self):
        raise NotYetSupportedError("r2() is for linear mixed models; a GLMM's needs a latent-scale variance")

    def _repr_html_(self) -> str:
        return f"<pre>{html.escape(self.summary())}</pre>"

    @with_timing
    def confint(self, method: str = "wald", level: float = 0.95, **kw) -> pd.DataFrame:
        """Wald intervals of the fixed effects (default), or profile-likelihood intervals of the random
        effects' sds and the fixed effects (method="profile", lme4's confint(method = "profile")); use
        m.bootstrap() for bootstrap quantiles."""
        if method == "profile":
            return profile_glmm(self, level)
        if method != "wald":
            raise ValueError("GLMM intervals: method='wald' or 'profile' (use m.bootstrap() for bootstrap quantiles)")
        z = NormalDist().inv_cdf(0.5 + level / 2)
        se = self.std_errors
        return pd.DataFrame({"lower": self.fixef - z * se, "upper": self.fixef + z * se})

    def summary(self) -> str:
        return format_glmm_summary(self)

    def __repr__(self) -> str:
        return self.summary()

    def bootstrap(self, n: int = 1000, seed: int = 0, **kw):
        """Parametric bootstrap (lme4's bootMer): n refits to responses simulated from this fit, batched
        (max_iter, chunk, progress as hj.bootstrap). Batched refits use the Laplace approximation only
        (a model fitted with nAGQ > 1 is refused)."""
        return _batched().bootstrap_glmm(self, n=n, seed=seed, **kw)

    def pb_test(self, big: "GlmerModel", n: int = 1000, seed: int = 0, max_iter: int = 100):
        """Parametric bootstrap likelihood-ratio test of this (smaller) model against `big`; see hj.pb_test."""
        return _batched().pb_test_glmm(self, big, n=n, seed=seed, max_iter=max_iter)

    def refit_many(self, responses, max_iter: int = 100) -> pd.DataFrame:
        """The model refitted to each column of `responses` (rows as the fit's), batched; see hj.fit_many."""
        return _batched().fit_many_glmm(self, responses, max_iter=max_iter)

    def refit(self, y: np.ndarray) -> "GlmerModel":
        """The same model fitted to another response (proportions, in the fit's row order)."""
        gd = GlmmData(with_response(self.gd.design, y), self.family, self.gd.formula, np.asarray(y, float),
                      self.gd.w, self.gd.offset)
        return fit_glmm(gd, self.nAGQ)


@float64
def profile_zeta(m: GlmerModel, k: int):
    """ζ(v) = sign(v − x̂_k) √(min deviance with x_k held at v − the fit's deviance), for coordinate k of
    x = (θ, β) (lme4's profile ζ); remembers the lowest deviance it met (a check on the fit)."""
    problem = make_problem(m.gd, n_agq=m.nAGQ)
    onehot = np.arange(len(m._x)) == k
    lower = lower_bounds(m.gd)
    seen = [m.objective]

    @float64
    def zeta(v, _=None):
        state = fit_held(problem, jnp.asarray(np.where(onehot, v, m._x)), jnp.asarray(lower), jnp.asarray(onehot),
                         jnp.asarray(v, float))
        if not bool(state.converged):
            return np.nan
        seen[0] = min(seen[0], float(state.f))
        return float(np.sign(v - m._x[k]) * np.sqrt(max(float(state.f) - m.objective, 0.0)))

    return zeta, seen


@float64
def profile_glmm(m: GlmerModel, level: float = 0.95) -> pd.DataFrame:
    """Profile-likelihood intervals (lme4's confint(method = "profile", oldNames = FALSE)): rows sd_* per
    random term, then the fixed effects. Each end is where |ζ| reaches the normal quantile, found by
    `inference.profile.end_point` (bracketing, then Brent) over fits with that parameter held; an sd
    whose ζ stays inside down to 0 gets the lower end 0. Random terms with one sd each (θ is the sd) only."""
    if m.family.has_dispersion or any(f.q != 1 for f in m.info.factors):
        raise NotYetSupportedError("profile intervals of GLMMs cover random terms with one sd each ((1 | g)) and "
                                   "families without a dispersion; use method='wald' or m.bootstrap()")
    target = NormalDist().inv_cdf(0.5 + level / 2)
    n_theta = m.layout.size
    se = np.sqrt(np.maximum(2.0 * np.diag(np.linalg.pinv(m._hessian)), 0.0))
    rows, lowest = [], m.objective
    for k in range(len(m._x)):
        zeta, seen = profile_zeta(m, k)
        c_hat, step = float(m._x[k]), target * se[k] if np.isfinite(se[k]) and se[k] > 0 else 0.25
        if k < n_theta:     # an sd: ≥ 0, its lower end 0 when ζ stays inside
            lo = None if c_hat <= 1e-8 else end_point(zeta, float, c_hat, step, target, -1, 0.0, c_hat)
            rows.append((0.0 if lo is None else lo, end_point(zeta, float, c_hat, step, target, +1, None, c_hat)))
        else:
            rows.append(tuple(end_point(zeta, float, c_hat, step, target, s, None, c_hat) for s in (-1, +1)))
        lowest = min(lowest, seen[0])
    if lowest < m.objective - 1e-6 * max(1.0, abs(m.objective)):
        warn(f"profiling found a lower deviance ({lowest:.6f}) than the fit's ({m.objective:.6f}): the fit had "
             "not converged; refit and profile again", RuntimeWarning)
    names = m.varcorr_names() + list(m.fixef.index)
    table_ = pd.DataFrame([(np.nan if a is None else a, np.nan if b is None else b) for a, b in rows],
                          index=names, columns=["lower", "upper"])
    return table_


def _stat_text(v) -> str:
    """A fit statistic as lme4 prints it: counts (df.resid) as integers, the others to one decimal."""
    return str(v) if isinstance(v, (int, np.integer)) else f"{v:.1f}"


def format_glmm_summary(m: GlmerModel) -> str:
    """The fit as lme4's print(summary(glmer(...))) lays it out."""
    how = "Laplace Approximation" if m.nAGQ == 1 else f"Adaptive Gauss-Hermite Quadrature, nAGQ = {m.nAGQ}"
    stats = [("AIC", m.aic), ("BIC", m.bic), ("logLik", m.loglik), ("deviance", m.objective), ("df.resid", m.df_resid)]
    parts = [f"Generalized linear mixed model fit by maximum likelihood ({how}) (hlm_jax)\n"
             f" Family: {m.family}\nFormula: {m.gd.formula}"
             + (f"\n({m.info.n_dropped_missing} observations deleted due to missingness)" if m.info.n_dropped_missing
                else "") + "\n\n" + table([[k for k, _ in stats], [_stat_text(v) for _, v in stats]], ["r"] * 5)]
    r = m.residuals("pearson").to_numpy()
    parts.append("Scaled residuals:\n" + table([["Min", "1Q", "Median", "3Q", "Max"],
                                                [f"{q:.4f}" for q in np.quantile(r, [0, .25, .5, .75, 1])]], ["r"] * 5))
    rows = [["Groups", "Name", "Variance", "Std.Dev.", "Corr"]]
    for name, cols, cov in m.term_covariances():
        sd = np.sqrt(np.diag(cov))
        for i, c in enumerate(cols):
            corr = " ".join(f"{cov[i, j] / (sd[i] * sd[j]):.2f}" if sd[i] * sd[j] > 0 else "NaN" for j in range(i))
            rows.append([name if i == 0 else "", c, f"{cov[i, i]:.4g}", f"{sd[i]:.4g}", corr])
    if m.family.has_dispersion:
        rows.append(["Residual", "", f"{m.sigma ** 2:.4g}", f"{m.sigma:.4g}", ""])
    groups = ", ".join(f"{k}, {v}" for k, v in m.ngroups.items())
    parts.append("Random effects:\n" + table(rows, ["l", "l", "r", "r", "l"]) + f"\nNumber of obs: {m.nobs}, groups:  {groups}")
    fixed = [["", "Estimate", "Std. Error", "z value", "Pr(>|z|)"]]
    for _, t in m.tidy().iterrows():
        fixed.append([t["term"], f"{t['estimate']:.5f}", f"{t['std_error']:.5f}", f"{t['statistic']:.3f}",
                      f"{t['p_value']:.3g}"])
    parts.append("Fixed effects:\n" + table(fixed, ["l", "r", "r", "r", "r"]))
    parts.append(fixed_correlation(m))
    notes = ["boundary (singular) fit: see the variance components above"] if m.singular else []
    parts.append("\n".join(notes + [f"optimizer: {m.opt}"]))
    return "\n\n".join(p for p in parts if p) + "\n"
