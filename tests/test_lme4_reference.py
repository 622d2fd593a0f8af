"""Fits compared with lme4 1.1-31 (tests/reference/*.json); tolerances from the core issue."""
from __future__ import annotations

import warnings

import numpy as np
import pytest

import hlm_jax as hj
from conftest import load_reference

CASES = ["dyestuff_reml", "dyestuff_ml", "dyestuff2_reml_singular", "sleepstudy_rs_reml", "sleepstudy_rs_ml",
         "sleepstudy_ri_reml", "sleepstudy_uncorr_reml", "hsb_oneway_reml", "hsb_full_reml",
         "hsb_contextual_reml"]

_FITS: dict[str, hj.LmerModel] = {}


def fitted(case: str) -> tuple[hj.LmerModel, dict]:
    ref = load_reference(case)
    if case not in _FITS:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", hj.SingularFitWarning)
            _FITS[case] = hj.lmer(ref["formula"], hj.datasets.load(ref["data"]), REML=ref["REML"])
    return _FITS[case], ref


def rel_close(actual, expected, rtol, atol=0.0):
    np.testing.assert_allclose(np.asarray(actual, float), np.asarray(expected, float), rtol=rtol, atol=atol)


@pytest.mark.parametrize("case", CASES)
def test_objective_at_least_as_good_as_lme4(case):
    m, ref = fitted(case)
    assert m.objective <= ref["objective"] * (1 + 1e-6)
    assert m.objective >= ref["objective"] - 1e-3 * abs(ref["objective"])  # not absurdly low either
    assert m.converged


# lme4 stops hsb_full at theta_3 = 4.8e-4 with a higher criterion than ours (theta_3 = 0, see
# test_singular_flag); that moves the ses slope by 1.5e-5 relative. At lme4's own theta we agree to 1e-8
# (test_estimates_at_lme4_theta), so the looser bound here measures lme4's stopping error, not ours.
FIXEF_RTOL = {"hsb_full_reml": 3e-5}
SE_RTOL = {"hsb_full_reml": 2e-4}
CONDSD_RTOL = {"hsb_full_reml": 5e-4}  # theta_3 = 0 (ours) vs 4.8e-4 (lme4) shifts the slope's conditional sd
# hsb_contextual: lme4's criterion is 4.5e-8 above ours; the flat direction moves one sd by 1.1e-4.
SDCOR_RTOL = {"hsb_contextual_reml": 2e-4}


@pytest.mark.parametrize("case", CASES)
def test_fixed_effects_and_standard_errors(case):
    m, ref = fitted(case)
    assert list(m.fixef.index) == list(ref["fixef"])
    rel_close(m.fixef.to_numpy(), list(ref["fixef"].values()), rtol=FIXEF_RTOL.get(case, 1e-5))
    rtol = SE_RTOL.get(case, 1e-4)
    rel_close(m.std_errors.to_numpy(), list(ref["se"].values()), rtol=rtol)
    rel_close(m.vcov.to_numpy(), ref["vcov_beta"], rtol=rtol, atol=1e-10)


@pytest.mark.parametrize("case", CASES)
def test_variance_components(case):
    m, ref = fitted(case)
    vc = m.varcorr
    expected = ref["varcorr"]
    assert list(vc["grp"]) == [r["grp"] for r in expected]
    assert list(vc["var1"].fillna("")) == [r["var1"] or "" for r in expected]
    assert list(vc["var2"].fillna("")) == [r["var2"] or "" for r in expected]
    rel_close(vc["sdcor"], [r["sdcor"] for r in expected], rtol=SDCOR_RTOL.get(case, 1e-4), atol=1e-6)
    rel_close(m.sigma, ref["sigma"], rtol=1e-4)
    assert m.nobs == ref["nobs"] and m.ngroups == ref["ngroups"]


@pytest.mark.parametrize("case", CASES)
def test_likelihood_summaries(case):
    m, ref = fitted(case)
    assert m.n_params == ref["df"]
    rel_close([m.loglik, m.aic, m.bic], [ref["logLik"], ref["AIC"], ref["BIC"]], rtol=1e-6)


@pytest.mark.parametrize("case", CASES)
def test_conditional_modes_and_sds(case):
    m, ref = fitted(case)
    for block in ref["ranef"]:
        table = m.ranef[block["group"]]
        labels = [str(level) for level in block["levels"]]
        # 1e-4 relative to the size of the term's modes (a mode near 0 has no relative precision)
        scale = max(np.abs(block["values"]).max(), 1e-2)
        rel_close(table.loc[labels, block["term"]], block["values"], rtol=1e-4, atol=1e-4 * scale)
        rel_close(table.loc[labels, f"condsd_{block['term']}"], block["condsd"], rtol=CONDSD_RTOL.get(case, 1e-4),
                  atol=1e-6)


@pytest.mark.parametrize("case", CASES)
def test_singular_flag(case):
    m, ref = fitted(case)
    if case == "hsb_full_reml":
        # lme4 stops at theta_3 = 4.8e-4 (not singular), but the criterion is even in theta_3 and
        # lower at 0: our optimum is better than lme4's and sits on the boundary.
        assert m.objective < ref["objective"]
        assert m.theta[2] < 1e-6 and m.singular
    else:
        assert m.singular == ref["singular"]


def test_theta_matches_lme4_names_and_values():
    m, ref = fitted("sleepstudy_rs_reml")
    assert list(m.theta_names) == ref["theta_names"]
    rel_close(m.theta, ref["theta"], rtol=1e-4)


def test_predictions_first_five_rows():
    m, ref = fitted("sleepstudy_rs_reml")
    rel_close(m.predict().to_numpy()[:5], ref["predict_first5"], rtol=1e-6)
    rel_close(m.predict(re=False).to_numpy()[:5], ref["predict_population_first5"], rtol=1e-6)
    data = hj.datasets.load("sleepstudy")
    rel_close(m.predict(data.head()).to_numpy(), ref["predict_first5"], rtol=1e-6)


def test_unseen_level_gets_population_prediction():
    m, _ = fitted("sleepstudy_rs_reml")
    new = hj.datasets.load("sleepstudy").head(3).assign(Subject=999)
    expected = m.fixef["(Intercept)"] + m.fixef["Days"] * new["Days"].to_numpy()
    rel_close(m.predict(new).to_numpy(), expected, rtol=1e-12)


def test_coef_is_fixef_plus_ranef():
    m, ref = fitted("sleepstudy_rs_reml")
    coef = m.coef["Subject"]
    ranef = {b["term"]: dict(zip(b["levels"], b["values"])) for b in ref["ranef"]}
    rel_close(coef.loc["309", "Days"], ref["fixef"]["Days"] + ranef["Days"]["309"], rtol=0, atol=1e-4)
    rel_close(coef.loc["309", "Days"], m.fixef["Days"] + m.ranef["Subject"].loc["309", "Days"], rtol=1e-14)


def test_fitted_plus_residuals_is_response():
    m, _ = fitted("sleepstudy_rs_reml")
    data = hj.datasets.load("sleepstudy")
    rel_close(m.fitted() + m.residuals(), data["Reaction"], rtol=1e-12)


def test_simulate_moments_match_fitted_model():
    m, ref = fitted("dyestuff_reml")
    sims = m.simulate(nsim=4000, seed=1)
    assert sims.shape == (30, 4000)
    total_var = ref["varcorr"][0]["vcov"] + ref["varcorr"][1]["vcov"]
    rel_close(sims.to_numpy().var(axis=1).mean(), total_var, rtol=0.05)
    rel_close(sims.to_numpy().mean(), ref["fixef"]["(Intercept)"], rtol=1e-3)
    np.testing.assert_array_equal(m.simulate(nsim=2, seed=5), m.simulate(nsim=2, seed=5))


def test_summary_reports_lme4_layout():
    m, _ = fitted("sleepstudy_rs_reml")
    text = m.summary()
    assert "REML criterion at convergence: 1743.6\n" in text  # lme4 prints it to one decimal
    assert "Number of obs: 180, groups:  Subject, 18" in text
    assert "Correlation of Fixed Effects" in text
    tidy = m.tidy()
    rel_close(tidy["statistic"], [36.838, 6.771], rtol=1e-4)


@pytest.mark.parametrize("case", CASES)
def test_estimates_at_lme4_theta(case):
    """The likelihood itself, separated from the optimiser: at lme4's θ we reproduce its numbers."""
    import jax
    import jax.numpy as jnp
    from hlm_jax.fit import design_stats
    from hlm_jax.likelihood.lmm import estimates

    m, ref = fitted(case)
    with jax.enable_x64(True):
        stats, beta0 = design_stats(m.design)
        est = estimates(jnp.asarray(ref["theta"]), stats, jnp.asarray(float(ref["REML"])))
    rel_close(float(est.objective), ref["objective"], rtol=1e-10)
    rel_close(beta0 + np.asarray(est.beta), list(ref["fixef"].values()), rtol=1e-8)
    rel_close(float(est.sigma), ref["sigma"], rtol=1e-8)
    rel_close(np.asarray(est.vcov_beta), ref["vcov_beta"], rtol=1e-7, atol=1e-12)
