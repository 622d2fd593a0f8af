"""The fitted model: `lmer()` and what a user reads off a fit (lme4's names and layouts)."""
from __future__ import annotations

import sys
from functools import cached_property
from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from .design import Design, DesignError, NotYetSupportedError, build_design, factor_labels, term_group_names
from .fit import ModelFit, fit_model
from .messages import require_bool, warn
from .likelihood.lmm import simulate_responses
from .model.layout import ThetaLayout, theta_layout
from .optimize import OptSummary, summarize
from .precision import float64, one_blas_thread
from .prior import drop_missing_prior, split_offsets, unique_rows, weighted_design, weights_and_offset
from .report import format_summary, html_model, with_timing
from .scaling import Scales, unit_scales

if TYPE_CHECKING:
    from .residual_fit import ResidualFit

SINGULAR_TOL = 1e-4  # lme4's isSingular(tol = 1e-4)


class ConvergenceWarning(UserWarning):
    """The optimiser stopped before the convergence test was met."""


class SingularFitWarning(UserWarning):
    """The fit is on the boundary: a variance is zero or a correlation is ±1."""


@with_timing
@float64(blas_limit=False)
def lmer(formula: str, data: pd.DataFrame, REML: bool = True, max_iter: int = 200, weights=None,
         offset=None, correlation=None) -> "LmerModel":
    """Fit a linear mixed model written in lme4's formula syntax, by REML (default) or ML.

    weights: prior weights (residual variance σ²/w_i), a column name or one value per row, or a
    variance function (VarIdent, VarPower, VarExp: nlme's weights=); offset: a column name or values
    added to the linear predictor (also `offset(...)` terms in the formula); correlation: AR1, CAR1 or
    CompSymm, nlme's residual correlation within the groups of the grouping factor (with prior weights too:
    nlme's weights = varFixed(~1/w))."""
    require_bool(REML, "REML")
    variance = _is_variance_function(weights)
    residual = correlation is not None or variance
    if residual and offset is not None:
        raise NotYetSupportedError("an offset together with a residual structure is not supported yet")
    if residual and (weights is None or variance):
        return _lmer_residual(formula, data, REML, max_iter, correlation, weights)
    frame = unique_rows(data)
    plain, _, offsets = split_offsets(formula)
    if weights is None and offset is None and not offsets:
        return fit_design(build_design(formula, data), REML, max_iter)
    w, off = weights_and_offset(frame, weights, offset, offsets)
    frame, w, off = drop_missing_prior(frame, w, off)
    if np.any(w == 0):
        raise DesignError(f"weights must be positive for lmer; row {frame.index[np.flatnonzero(w == 0)[0]]!r} has "
                          "weight 0 (drop such rows)")
    if residual:  # prior weights beside a correlation: each row's residual sd has the fixed factor 1/√w
        return _lmer_residual(formula, frame.assign(**{_residual_fit().PRIOR_WEIGHTS: w}), REML, max_iter,
                              correlation, None)
    design = build_design(plain, frame)
    pos = frame.index.get_indexer(design.info.row_index)
    return fit_design(design, REML, max_iter, prior=(w[pos], off[pos]))


def _lmer_residual(formula, data, REML, max_iter, correlation, variance) -> "LmerModel":
    """lmer with nlme's residual structures (see `residual_fit`): on one BLAS thread (lmer itself takes no limit),
    since a group's correlation matrix can be large and is factored in LAPACK."""
    room = _residual_fit()
    prepared = room.prepare_design(formula, data, correlation, variance)
    with one_blas_thread():
        raw, beta0, residual = room.fit_residual_model(prepared, prepared.values, correlation, variance, bool(REML),
                                                       max_iter)
    w = prepared.values.get(room.PRIOR_WEIGHTS)  # prior weights beside the structure, or none
    model = LmerModel(prepared.design, bool(REML), raw, beta0, None if w is None else (w, np.zeros(len(w))), residual)
    model.warn_if_problematic()
    return model


def _residual_fit():
    """hlm_jax.residual_fit, imported on first use: residual structures (it and model.residual) add 20-30 ms of CPU
    to `import hlm_jax`, which a plain lmer does not need (a lazy import for start-up latency: 101 → 78 ms with
    bytecode cached, 195 → 167 ms without, medians of 8 fresh processes)."""
    from . import residual_fit
    return residual_fit


def _is_variance_function(weights) -> bool:
    """Whether `weights` is a variance function (VarIdent, VarPower, VarExp), without importing their module:
    one exists only once hlm_jax.model.residual is loaded."""
    module = sys.modules.get(f"{__package__}.model.residual")
    return module is not None and isinstance(weights, module.VARIANCE_FUNCTIONS)


@with_timing
@float64(blas_limit=False)
def fit_design(design: Design, REML: bool = True, max_iter: int = 200, prior=None) -> "LmerModel":
    """Fit a model whose design is already built (used to refit by ML, or with another response);
    `prior` = (weights, offset) per row of the design, or None."""
    REML = require_bool(REML, "REML")
    if prior is None:
        raw, beta0 = fit_model(design, bool(REML), max_iter)
    else:
        raw, beta0 = fit_model(weighted_design(design, *prior), bool(REML), max_iter)
        shift = -np.sum(np.log(prior[0]))   # −2 log-likelihood: the transformed one minus Σ log w
        raw = raw._replace(state=raw.state._replace(f=raw.state.f + shift),
                           est=raw.est._replace(objective=raw.est.objective + shift))
    model = LmerModel(design, bool(REML), raw, beta0, prior)
    model.warn_if_problematic()
    return model


class LmerModel:
    """A fitted linear mixed model. Attribute names follow lme4 (fixef, ranef, VarCorr → varcorr, ...);
    `timing`: the fitting call's seconds, compile_s of them compiling and run_s the rest."""

    def __init__(self, design: Design, reml: bool, raw: ModelFit, beta0: np.ndarray, prior=None,
                 residual: ResidualFit | None = None):
        self.design = design
        self.residual = residual
        self.prior = prior
        self.offset = np.zeros(design.info.nobs) if prior is None else prior[1]
        self.info = design.info
        self.layout: ThetaLayout = theta_layout(design.info.terms)
        self.reml = reml
        self._raw = raw
        self._beta0 = beta0
        method = ("projected Newton, exact gradient and Hessian by trace identities"
                  if self.info.sparse or len(self.info.factors) > 1 else OptSummary.method)
        self.opt: OptSummary = summarize(raw.state, method=method)
        self.timing: dict = {}  # filled by the fitting call (`with_timing`)

    # ---- estimates -------------------------------------------------------------------------
    @property
    def formula(self) -> str:
        return self.info.formula

    @cached_property
    def theta(self) -> np.ndarray:
        """lme4's θ: the relative covariance factor's lower triangles, term by term, column-major."""
        return np.asarray(self._raw.state.x, dtype=float)

    @property
    def theta_names(self) -> tuple[str, ...]:
        return self.layout.names

    @cached_property
    def fixef(self) -> pd.Series:
        return pd.Series(self._beta0 + np.asarray(self._raw.est.beta), index=list(self.info.fixed_names))

    @cached_property
    def vcov(self) -> pd.DataFrame:
        names = list(self.info.fixed_names)
        return pd.DataFrame(np.asarray(self._raw.est.vcov_beta), index=names, columns=names)

    @property
    def std_errors(self) -> pd.Series:
        return pd.Series(np.sqrt(np.diag(self.vcov.to_numpy())), index=self.fixef.index)

    @property
    def sigma(self) -> float:
        return float(self._raw.est.sigma)

    @property
    def objective(self) -> float:
        """REML criterion (REML fits) or deviance, -2 log-likelihood (ML fits), at the optimum."""
        return float(self._raw.est.objective)

    @property
    def loglik(self) -> float:
        return -0.5 * self.objective

    @property
    def n_params(self) -> int:
        """Number of estimated parameters: fixed effects, θ, the residual structure's and σ (`df` of logLik)."""
        extra = 0 if self.residual is None else len(self.residual.eta)
        return len(self.fixef) + len(self.theta) + extra + 1

    @property
    def aic(self) -> float:
        return self.objective + 2.0 * self.n_params

    @property
    def bic(self) -> float:
        return self.objective + self.n_params * np.log(self.nobs)

    @property
    def nobs(self) -> int:
        return self.info.nobs

    @property
    def ngroups(self) -> dict[str, int]:
        return {t.factor: t.n_levels for t in self.info.terms}

    @property
    def singular(self) -> bool:
        """lme4's isSingular rule (some θ element with lower bound 0 is below 1e-4), applied to θ in the
        fit's unit-scaled columns (see `scaling`) so that the answer does not depend on the data's units."""
        return bool(np.any((self.theta * self.scales.theta)[self.layout.lower == 0] < SINGULAR_TOL))

    @property
    def scales(self) -> Scales:
        """The column scales the model was fitted in (unit scales for fits made without them)."""
        return self._raw.scales or unit_scales(self.info, self.layout)

    @property
    def converged(self) -> bool:
        return self.opt.converged

    def warn_if_problematic(self) -> None:
        if not self.converged:
            warn(f"model failed to converge: {self.opt.message} "
                 f"(projected |grad| = {self.opt.grad_norm:.2e})", ConvergenceWarning)
        if self.singular:
            warn("boundary (singular) fit: a variance component is (near) zero or a correlation is ±1",
                 SingularFitWarning)

    # ---- variance components ---------------------------------------------------------------
    @cached_property
    def lambda_blocks(self) -> list[np.ndarray]:
        """Λ_k (q_k × q_k) of each grouping factor, in the design's factor order."""
        return self.layout.lambda_blocks(self.theta)

    @property
    def lambda_matrix(self) -> np.ndarray:
        """Λ of the first grouping factor (the only one in one-factor models)."""
        return self.lambda_blocks[0]

    def term_covariances(self) -> list[tuple[str, tuple[str, ...], np.ndarray]]:
        """(lme4 group name, column names, covariance matrix) per random term, in lme4's order."""
        out = []
        lams = self.layout.term_lambdas(self.theta)
        for t, name, lam in zip(self.info.terms, term_group_names(self.info.terms), lams):
            out.append((name, t.columns, self.sigma ** 2 * lam @ lam.T))
        return out

    @cached_property
    def varcorr(self) -> pd.DataFrame:
        """lme4's as.data.frame(VarCorr(m)): variances and sds, then covariances and correlations."""
        rows = []
        for name, cols, cov in self.term_covariances():
            sd = np.sqrt(np.diag(cov))
            rows += [(name, c, None, cov[i, i], sd[i]) for i, c in enumerate(cols)]
            for j in range(len(cols)):
                for i in range(j + 1, len(cols)):
                    corr = cov[i, j] / (sd[i] * sd[j]) if sd[i] * sd[j] > 0 else np.nan
                    rows.append((name, cols[j], cols[i], cov[i, j], corr))
        rows.append(("Residual", None, None, self.sigma ** 2, self.sigma))
        return pd.DataFrame(rows, columns=["grp", "var1", "var2", "vcov", "sdcor"])

    @property
    def residual_params(self) -> pd.Series:
        """The residual structure's parameters as nlme's summary reports them (Phi, Rho, sd ratios to the
        first level, power, expon); empty without a structure."""
        if self.residual is None:
            return pd.Series(dtype=float)
        res = self.residual.residual
        with jax.enable_x64(True):
            values = np.asarray(res.natural(jnp.asarray(self.residual.eta)))
        return pd.Series(values, index=list(res.names), dtype=float)

    def varcorr_names(self) -> list[str]:
        """Names of the sds and correlations as lme4's confint(oldNames = FALSE) writes them, in θ order."""
        return self.layout.varcorr_names()

    # ---- random effects --------------------------------------------------------------------
    @cached_property
    def ranef(self) -> dict[str, pd.DataFrame]:
        """Conditional modes per grouping factor (rows: levels) with their conditional sds (`condsd_*`)."""
        out = {}
        for k, f in enumerate(self.info.factors):
            sd = np.sqrt(np.maximum(np.einsum("gii->gi", self._raw.mode_covs[k]), 0.0))
            names = self.z_names(k)
            index = pd.Index(f.levels, name=f.name)
            modes = pd.DataFrame(self._raw.modes[k], index=index, columns=names)
            sds = pd.DataFrame(sd, index=index, columns=[f"condsd_{n}" for n in names])
            out[f.name] = pd.concat([modes, sds], axis=1)
        return out

    def z_names(self, block: int = 0) -> list[str]:
        """Names of the random-effect columns of factor block `block`."""
        return [c for t in self.info.terms if t.block == block for c in t.columns]

    @cached_property
    def coef(self) -> dict[str, pd.DataFrame]:
        """lme4's coef(): fixed effects plus each group's conditional modes."""
        out = {}
        for k, (factor, re) in enumerate(self.ranef.items()):
            table = pd.DataFrame(np.tile(self.fixef.to_numpy(), (len(re), 1)), index=re.index,
                                 columns=self.fixef.index)
            for name in self.z_names(k):
                if name in table.columns:
                    table[name] += re[name]
                else:
                    table[name] = re[name]
            out[factor] = table
        return out

    # ---- predictions -----------------------------------------------------------------------
    def _row_random_part(self, Zs: list[np.ndarray], codes: list[np.ndarray]) -> np.ndarray:
        """Σ_k Z_k b_k per row; rows whose level is unknown (code −1) get no random effect from that factor."""
        out = np.zeros(len(codes[0]))
        for b, Z, code in zip(self._raw.modes, Zs, codes):
            known = code >= 0
            out[known] += np.einsum("nq,nq->n", Z[known], b[code[known]])
        return out

    def fitted(self) -> pd.Series:
        """offset + Xβ̂ + Zb̂ for the rows used in the fit (indexed as the data)."""
        info = self.info
        values = self.offset + info.X @ self.fixef.to_numpy() + self._row_random_part([f.Z for f in info.factors],
                                                                        [f.codes for f in info.factors])
        return pd.Series(values, index=info.row_index, name="fitted")

    def residuals(self, type: str = "response") -> pd.Series:
        """y − fitted ("response"), or nlme's scaled residuals: "pearson" divided by each row's residual sd
        (σd_i with a variance function, σ/√w_i with prior weights: lme4's type="pearson", scaled=TRUE),
        "normalized" also decorrelated within groups by the correlation structure (pearson without one)."""
        if type not in ("response", "pearson", "normalized"):
            raise ValueError(f"type must be 'response', 'pearson' or 'normalized', got {type!r}")
        values = self.info.y - self.fitted().to_numpy()
        if type != "response" and self.residual is not None:
            values = _residual_fit().scaled_residuals(self, type)
        elif type != "response":
            values = values * np.sqrt(1.0 if self.prior is None else self.prior[0]) / self.sigma
        return pd.Series(values, index=self.info.row_index, name="residuals")

    def predict(self, newdata: pd.DataFrame | None = None, re: bool = True) -> pd.Series:
        """Predictions (with the random effects unless re=False); levels unseen in the fit get the
        population prediction, as lme4's allow.new.levels=TRUE; rows with missing inputs give NaN."""
        if newdata is None:
            fitted = self.fitted()
            if re:
                return fitted
            return pd.Series(self.info.X @ self.fixef.to_numpy(), index=self.info.row_index, name="fitted")
        X, Zs, codes, keep = self._new_matrices(newdata)
        values = X @ self.fixef.to_numpy()
        if re:
            values = values + self._row_random_part(Zs, codes)
        out = np.full(len(newdata), np.nan)
        out[keep] = values
        return pd.Series(out, index=newdata.index, name="predicted")

    def _new_matrices(self, newdata: pd.DataFrame):
        """X, per-factor Z and level codes (−1 for unseen levels) of new rows, and which rows are complete."""
        info = self.info
        needed = info.fixed_spec.variables + [v for f in info.factors for spec, _ in f.specs for v in spec.variables]
        needed = needed + [c for f in info.factors for c in f.group]
        absent = [c for c in dict.fromkeys(needed) if c not in newdata.columns]
        if absent:
            raise DesignError(f"newdata lacks column {absent[0]!r} needed for prediction")
        keep = newdata[list(dict.fromkeys(needed))].notna().all(axis=1).to_numpy()
        frame = newdata.loc[keep]
        X = info.fixed_spec.matrix(frame)[:, [info.fixed_spec.names.index(n) for n in info.fixed_names]]
        Zs, codes = [], []
        for f in info.factors:
            Zs.append(np.column_stack([spec.matrix(frame)[:, list(cols)] for spec, cols in f.specs]))
            lookup = {lvl: i for i, lvl in enumerate(f.levels)}
            codes.append(np.array([lookup.get(lbl, -1) for lbl in factor_labels(frame, f.group)], dtype=np.int64))
        return X, Zs, codes, keep

    @float64
    def simulate(self, nsim: int = 1, seed: int = 0) -> pd.DataFrame:
        """lme4's simulate(): nsim responses drawn from the fitted model (b ~ N(0, σ²ΛΛᵀ), ε ~ N(0, σ²))."""
        self.require_unweighted("simulate()")
        info = self.info
        factors = info.factors
        if self.residual is not None:
            ys = _residual_fit().simulate(self, nsim, seed)
            return pd.DataFrame(ys.T, index=info.row_index, columns=[f"sim_{i + 1}" for i in range(nsim)])
        ys = simulate_responses(jax.random.PRNGKey(seed), jnp.asarray(info.X @ self.fixef.to_numpy()),
                                tuple(jnp.asarray(f.Z) for f in factors), tuple(jnp.asarray(f.codes) for f in factors),
                                tuple(jnp.asarray(lam) for lam in self.lambda_blocks), self.sigma,
                                tuple(f.n_levels for f in factors), nsim)
        return pd.DataFrame(np.asarray(ys).T, index=info.row_index,
                            columns=[f"sim_{i + 1}" for i in range(nsim)])

    # ---- tables ----------------------------------------------------------------------------
    def tidy(self, effects: str = "fixed", ddf: str | None = None) -> pd.DataFrame:
        """broom.mixed's tidy(m, effects=...) with Python column names (std_error, p_value).

        Parameters
        ----------
        effects : {"fixed", "ran_pars", "ran_vals"}
            "fixed": effect, term, estimate, std_error, statistic (t value), and with `ddf` also df and
            p_value; "ran_pars": effect, group, term (sd__x, cor__x.y, sd__Observation), estimate (sds and
            correlations); "ran_vals": effect, group, level, term, estimate (conditional mode), std_error
            (conditional sd).
        ddf : {"satterthwaite", "kenward-roger"}, optional
            Denominator df for the fixed effects' t tests (lmerTest's summary(m, ddf=...)); Kenward-Roger
            reports its adjusted standard error.
        """
        if effects == "fixed":
            table = self._fixed_table(ddf)
            table.insert(0, "effect", "fixed")
            return table
        if effects == "ran_pars":
            return _ran_pars(self)
        if effects == "ran_vals":
            return _ran_vals(self)
        raise ValueError(f"unknown effects {effects!r}; use 'fixed', 'ran_pars' or 'ran_vals'")

    def _fixed_table(self, ddf: str | None) -> pd.DataFrame:
        if ddf is not None:
            self.require_plain(f"tidy(ddf={ddf!r})")
            table = self.ddf_table(ddf)
            out = table[["term", "estimate", "std_error", "statistic", "df", "p_value"]].copy()
            out.attrs["ddf"] = table.attrs.get("ddf")
            return out
        se = self.std_errors
        return pd.DataFrame({"term": self.fixef.index, "estimate": self.fixef.to_numpy(),
                             "std_error": se.to_numpy(), "statistic": (self.fixef / se).to_numpy()})

    def glance(self) -> pd.DataFrame:
        """broom.mixed's glance(m): one row with nobs, sigma, logLik, AIC, BIC, REMLcrit (REML fits) or
        deviance (ML fits), and df_residual (observations minus estimated parameters)."""
        row = {"nobs": self.nobs, "sigma": self.sigma, "logLik": self.loglik, "AIC": self.aic, "BIC": self.bic,
               "REMLcrit" if self.reml else "deviance": self.objective, "df_residual": self.nobs - self.n_params}
        return pd.DataFrame([row])

    @with_timing
    @float64
    def refit(self, REML: bool) -> "LmerModel":
        """The same model (residual structure and prior weights included) fitted by REML or by ML."""
        if self.residual is None:
            return fit_design(self.design, REML, prior=self.prior)
        correlation, variance, values = self.residual.spec
        raw, beta0, residual = _residual_fit().fit_residual_model(self.design, values, correlation, variance,
                                                                  bool(REML))
        return LmerModel(self.design, bool(REML), raw, beta0, self.prior, residual)

    def require_unweighted(self, what: str) -> None:
        """Refuse computations that do not know prior weights and offsets yet (they would simulate without them)."""
        if self.prior is not None:
            raise NotYetSupportedError(f"{what} is not available for models with prior weights or an offset yet")

    def require_plain(self, what: str) -> None:
        """Refuse computations that do not know residual structures, prior weights or offsets yet."""
        self.require_unweighted(what)
        if self.residual is not None:
            raise NotYetSupportedError(f"{what} is not available for models with a residual structure yet "
                                       "(variance_table() gives Hessian-based SEs, bootstrap() percentile intervals)")

    def summary(self, ddf: str | None = None, stars: bool = False, correlation: bool | None = None) -> str:
        """The fit as lme4's print(summary(m)) lays it out; with `ddf` as lmerTest's summary(m, ddf=...).

        Parameters
        ----------
        ddf : {"satterthwaite", "kenward-roger"}, optional
            Adds the denominator df and Pr(>|t|) columns to the fixed effects.
        stars : bool
            Significance stars after the p values, with R's legend.
        correlation : bool, optional
            The fixed-effect correlations: None (default) shows them for up to 12 fixed effects and a note
            beyond, True always, False never.
        """
        table = self._fixed_table(ddf)
        return format_summary(self, table, table.attrs.get("ddf"), stars, correlation)

    def __repr__(self) -> str:
        return self.summary()

    def _repr_html_(self) -> str:
        return html_model(self, self._fixed_table(None))


def _ran_pars(model) -> pd.DataFrame:
    """broom.mixed's ran_pars rows: each term's sds and correlations in θ order, then the residual sd."""
    rows = []
    for name, cols, cov in model.term_covariances():
        sd = np.sqrt(np.diag(cov))
        for j in range(len(cols)):
            for i in range(j, len(cols)):
                if i == j:
                    rows.append((name, f"sd__{cols[i]}", sd[i]))
                else:
                    corr = cov[i, j] / (sd[i] * sd[j]) if sd[i] * sd[j] > 0 else np.nan
                    rows.append((name, f"cor__{cols[j]}.{cols[i]}", corr))
    rows.append(("Residual", "sd__Observation", model.sigma))
    out = pd.DataFrame(rows, columns=["group", "term", "estimate"])
    out.insert(0, "effect", "ran_pars")
    return out


def _ran_vals(model) -> pd.DataFrame:
    """broom.mixed's ran_vals rows: per factor and column, each level's conditional mode and sd."""
    parts = []
    for k, (factor, re) in enumerate(model.ranef.items()):
        for col in model.z_names(k):
            parts.append(pd.DataFrame({"effect": "ran_vals", "group": factor, "level": re.index.astype(str),
                                       "term": col, "estimate": re[col].to_numpy(),
                                       "std_error": re[f"condsd_{col}"].to_numpy()}))
    return pd.concat(parts, ignore_index=True)
