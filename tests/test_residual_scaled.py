"""Scaled residuals against nlme 3.1 (tests/reference/make_scaled_residuals_reference.R): residuals(fit,
type = "response" / "pearson" / "normalized") of Orthodont fits with residual structures, and of the fit
without one (pearson = r/σ). Differences come from the optimum's tolerance (nlme's and ours), ~1e-6."""
from __future__ import annotations

import numpy as np
import pytest

import hlm_jax as hj

from conftest import load_reference

ORTHODONT = "distance ~ age * Sex + (1|Subject)"
CASES = {
    "ar1": (ORTHODONT, dict(correlation=hj.AR1())),
    "varident": (ORTHODONT, dict(weights=hj.VarIdent("Sex"))),
    "ar1_varident": (ORTHODONT, dict(correlation=hj.AR1(), weights=hj.VarIdent("Sex"))),
    "cs": ("distance ~ age * Sex + (0 + age|Subject)", dict(correlation=hj.CompSymm())),
    "varpower": (ORTHODONT, dict(weights=hj.VarPower("age"))),
    "plain": (ORTHODONT, {}),
}


@pytest.mark.parametrize("case", list(CASES))
def test_scaled_residuals_match_nlme(case):
    ref = load_reference("orthodont_scaled_residuals")[case]
    formula, kw = CASES[case]
    m = hj.lmer(formula, hj.datasets.load("orthodont"), **kw)
    assert m.loglik == pytest.approx(ref["logLik"], rel=1e-6)
    for kind in ("response", "pearson", "normalized"):
        np.testing.assert_allclose(m.residuals(type=kind).to_numpy(), ref[kind], atol=2e-6, err_msg=kind)


def test_pearson_residuals_of_a_weighted_fit_match_lme4():
    """Prior weights w: the residual sd of row i is σ/√w_i (lme4's residuals(type = "pearson", scaled = TRUE))."""
    ref = load_reference("orthodont_scaled_residuals")["weighted_lme4"]
    d = hj.datasets.load("orthodont").assign(w=lambda f: 1.0 + (f["age"] - 8) / 6)
    m = hj.lmer(ORTHODONT, d, weights="w")
    assert m.loglik == pytest.approx(ref["logLik"], rel=1e-6)
    np.testing.assert_allclose(m.residuals().to_numpy(), ref["response"], atol=2e-6)
    np.testing.assert_allclose(m.residuals(type="pearson").to_numpy(), ref["pearson"], atol=2e-6)
    with pytest.raises(ValueError, match="'working'"):
        m.residuals(type="working")


def test_prior_weights_beside_an_ar1_correlation_match_nlme():
    """Prior weights w with AR(1): row i's residual variance is σ²/w_i (nlme's varFixed(~1/w))."""
    ref = load_reference("orthodont_ar1_priorweights_reml")
    d = hj.datasets.load("orthodont").assign(w=lambda f: 1.0 + (f["age"] - 8) / 6)
    m = hj.lmer(ORTHODONT, d, weights="w", correlation=hj.AR1())
    assert m.converged
    assert m.loglik == pytest.approx(ref["logLik"], rel=1e-6)
    assert m.aic == pytest.approx(ref["AIC"], rel=1e-6)
    np.testing.assert_allclose(m.fixef.to_numpy(), list(ref["fixef"].values()), atol=1e-4)
    np.testing.assert_allclose(m.std_errors.to_numpy(), list(ref["se"].values()), atol=1e-3)
    assert m.residual_params["Phi"] == pytest.approx(ref["corStruct"]["Phi"], abs=1e-3)
    assert m.sigma == pytest.approx(ref["sigma"], abs=1e-3)
    assert m.varcorr["sdcor"].iloc[0] == pytest.approx(ref["re_sd"]["(Intercept)"], abs=1e-3)
    for kind in ("response", "pearson", "normalized"):
        np.testing.assert_allclose(m.residuals(type=kind).to_numpy(), ref[kind], atol=2e-5, err_msg=kind)
    # the ML refit keeps the weights (its criterion differs from the unweighted model's)
    unweighted = hj.lmer(ORTHODONT, d, correlation=hj.AR1(), REML=False)
    assert m.refit(REML=False).loglik != pytest.approx(unweighted.loglik, rel=1e-3)
    with pytest.raises(hj.NotYetSupportedError, match="prior weights"):
        m.bootstrap(n=2)
    with pytest.raises(hj.NotYetSupportedError, match="offset"):
        hj.lmer(ORTHODONT, d, offset="w", correlation=hj.AR1())
