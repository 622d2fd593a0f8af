"""Several grouping factors (crossed and nested) against lme4, and invariances of the fit."""
from __future__ import annotations

import warnings

import numpy as np
import pytest

import hlm_jax as hj
from conftest import load_reference


def rel_close(actual, expected, rtol, atol=0.0):
    np.testing.assert_allclose(np.asarray(actual, float), np.asarray(expected, float), rtol=rtol, atol=atol)


def check_against_lme4(m, ref, fixef_rtol=1e-4, vc_rtol=1e-3):
    assert m.objective <= ref["objective"] * (1 + 1e-6)
    assert m.converged
    rel_close(m.fixef.to_numpy(), list(ref["fixef"].values()), rtol=fixef_rtol)
    assert list(m.fixef.index) == list(ref["fixef"])
    vc = m.varcorr
    assert list(vc["grp"]) == [r["grp"] for r in ref["varcorr"]]
    rel_close(vc["sdcor"], [r["sdcor"] for r in ref["varcorr"]], rtol=vc_rtol)
    assert list(m.theta_names) == ref["theta_names"]
    assert m.ngroups == ref["ngroups"]
    assert m.singular == ref["singular"]


def check_ranef(m, ref, rtol=1e-4):
    for block in ref["ranef"]:
        table = m.ranef[block["group"]]
        labels = [str(level) for level in block["levels"]]
        scale = max(np.abs(block["values"]).max(), 1e-2)
        rel_close(table.loc[labels, block["term"]], block["values"], rtol=rtol, atol=rtol * scale)
        rel_close(table.loc[labels, f"condsd_{block['term']}"], block["condsd"], rtol=rtol)


@pytest.mark.parametrize("case", ["penicillin_reml", "pastes_reml"])
def test_small_multi_factor_models_match_lme4(case):
    ref = load_reference(case)
    m = hj.lmer(ref["formula"], hj.datasets.load(ref["data"]))
    check_against_lme4(m, ref)
    check_ranef(m, ref)
    rel_close(m.std_errors.to_numpy(), list(ref["se"].values()), rtol=1e-4)
    rel_close([m.loglik, m.aic, m.bic], [ref["logLik"], ref["AIC"], ref["BIC"]], rtol=1e-6)


def test_nested_shorthand_equals_explicit_interaction():
    data = hj.datasets.load("pastes")
    a = hj.lmer("strength ~ 1 + (1 | batch/cask)", data)
    b = hj.lmer("strength ~ 1 + (1 | batch) + (1 | batch:cask)", data)
    rel_close(a.objective, b.objective, rtol=1e-12)
    rel_close(a.fixef, b.fixef, rtol=1e-10)
    rel_close(np.sort(a.varcorr["sdcor"]), np.sort(b.varcorr["sdcor"]), rtol=1e-8)


def test_fit_invariant_to_row_order_and_level_labels():
    data = hj.datasets.load("penicillin")
    base = hj.lmer("diameter ~ 1 + (1 | plate) + (1 | sample)", data)
    rng = np.random.default_rng(7)
    shuffled = data.iloc[rng.permutation(len(data))].copy()
    rename = {old: f"p{i}" for i, old in enumerate(rng.permutation(data["plate"].unique()))}
    shuffled["plate"] = shuffled["plate"].map(rename)
    m = hj.lmer("diameter ~ 1 + (1 | plate) + (1 | sample)", shuffled)
    rel_close(m.objective, base.objective, rtol=1e-12)
    rel_close(m.theta, base.theta, rtol=1e-6)
    modes = m.ranef["plate"]["(Intercept)"]
    for old, new in rename.items():
        rel_close(modes[new], base.ranef["plate"].loc[old, "(Intercept)"], rtol=1e-6, atol=1e-9)


def test_predict_new_levels_of_either_factor():
    data = hj.datasets.load("penicillin")
    m = hj.lmer("diameter ~ 1 + (1 | plate) + (1 | sample)", data)
    new = data.head(2).copy()
    new["plate"] = ["zz", new["plate"].iloc[1]]
    pred = m.predict(new)
    re_plate = m.ranef["plate"]["(Intercept)"]
    re_sample = m.ranef["sample"]["(Intercept)"]
    expected0 = m.fixef["(Intercept)"] + re_sample[new["sample"].iloc[0]]
    expected1 = m.fixef["(Intercept)"] + re_plate[new["plate"].iloc[1]] + re_sample[new["sample"].iloc[1]]
    rel_close(pred.to_numpy(), [expected0, expected1], rtol=1e-12)
    rel_close(m.predict().to_numpy()[:5], (data["diameter"] - m.residuals()).to_numpy()[:5], rtol=1e-12)


def test_simulate_has_both_variance_components():
    data = hj.datasets.load("penicillin")
    m = hj.lmer("diameter ~ 1 + (1 | plate) + (1 | sample)", data)
    sims = m.simulate(nsim=3000, seed=3).to_numpy()
    vc = m.varcorr.set_index("grp")["vcov"]
    rel_close(sims.var(axis=1).mean(), vc.sum(), rtol=0.1)


@pytest.mark.slow
def test_insteval_crossed_matches_lme4():
    ref = load_reference("insteval_reml")
    data = hj.datasets.load("insteval").astype({"service": str})
    with warnings.catch_warnings():
        warnings.simplefilter("error", hj.ConvergenceWarning)
        m = hj.lmer(ref["formula"], data)
    check_against_lme4(m, ref, fixef_rtol=1e-4, vc_rtol=1e-3)
    assert m.objective < ref["objective"]  # lme4 reports a failed gradient check here
    check_ranef(m, ref, rtol=1e-3)


def test_too_large_dense_block_fails_early_naming_the_term(monkeypatch):
    import hlm_jax.fit

    monkeypatch.setattr(hlm_jax.fit, "DENSE_BYTES_LIMIT", 1000)
    data = hj.datasets.load("penicillin")
    with pytest.raises(hj.DesignError, match=r"dense 6 x 6 block \(term on 'sample': 6 levels x 1 columns\)"):
        hj.lmer("diameter ~ 1 + (1 | plate) + (1 | sample)", data)
