"""GLMMs and weighted lmer fits against lme4 1.1-31 references made by tests/reference/make_glmm_references.R
(tests/reference/glmm_lme4.json): probit and cloglog links, Poisson with crossed and nested factors and an
offset, nAGQ = 9, the proportion form, VerbAgg, lmer with weights and an offset, the results API."""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import hlm_jax as hj
from hlm_jax.glmm import make_problem

REF = json.loads((Path(__file__).parent / "reference" / "glmm_lme4.json").read_text())
POISSON = pd.read_csv(Path(__file__).parent / "reference" / "glmm_poisson_data.csv").astype({"subj": str, "item": str})


def cbpp() -> pd.DataFrame:
    d = hj.datasets.load("cbpp")
    return d.assign(period=d["period"].astype(str), herd=d["herd"].astype(str))


def check_fit(m, ref, loglik_rtol=1e-5, rtol=1e-3):
    """logLik at least as good as lme4's (within rounding) and close; fixef and θ within rtol."""
    assert m.converged
    assert m.loglik == pytest.approx(ref["logLik"], rel=loglik_rtol)
    assert m.loglik >= ref["logLik"] - 1e-6 * abs(ref["logLik"])
    np.testing.assert_allclose(m.fixef.to_numpy(), list(ref["fixef"].values()), rtol=rtol, atol=1e-4)
    np.testing.assert_allclose(m.theta, np.atleast_1d(ref["theta"]), rtol=rtol, atol=1e-4)


def test_probit_binomial():
    ref = REF["cbpp_probit"]
    m = hj.glmer(ref["formula"], cbpp(), family=hj.families.Binomial(link="probit"))
    check_fit(m, ref)


@pytest.mark.slow
def test_cloglog_binomial():
    ref = REF["cbpp_cloglog"]
    check_fit(hj.glmer(ref["formula"], cbpp(), family="binomial", link="cloglog"), ref)


def test_proportion_with_weights_against_lme4():
    ref = REF["cbpp_proportion"]
    d = cbpp().assign(prop=lambda f: f["incidence"] / f["size"])
    m = hj.glmer("prop ~ period + (1 | herd)", d, family="binomial", weights="size")
    check_fit(m, ref)
    m2 = hj.glmer(ref["formula"], cbpp(), family="binomial", weights="size")   # an arithmetic response
    assert m2.loglik == pytest.approx(m.loglik, rel=1e-12)


@pytest.mark.filterwarnings("ignore:labels of 'item' repeat")  # crossed on purpose
def test_poisson_crossed_with_offset():
    ref = REF["poisson_crossed"]
    m = hj.glmer(ref["formula"], POISSON, family="poisson")
    check_fit(m, ref)
    # conditional modes and sds of both factors (lme4's ranef(condVar = TRUE))
    for factor in ("subj", "item"):
        re = m.ranef[factor]
        r = ref["ranef"][factor]
        got = re.loc[r["levels"]]
        np.testing.assert_allclose(got.iloc[:, 0], r["mode"], rtol=2e-3, atol=2e-4)
        np.testing.assert_allclose(got.iloc[:, 1], r["condsd"], rtol=2e-3)


@pytest.mark.slow
def test_poisson_nested_with_offset():
    ref = REF["poisson_nested"]
    check_fit(hj.glmer(ref["formula"], POISSON, family="poisson"), ref)


@pytest.mark.slow
def test_cbpp_adaptive_gauss_hermite_9():
    ref = REF["cbpp_agq9"]
    m = hj.glmer(ref["formula"], cbpp(), nAGQ=9)
    # lme4's nAGQ > 1 deviance leaves out the saturated model's log-likelihood Σ log p(y | μ = y)
    # (the binomial coefficients here); with it added back the two agree.
    y, w = m.gd.y, m.gd.w
    k = np.round(y * w).astype(int)
    from scipy.stats import binom
    saturated = np.sum(binom.logpmf(k, w.astype(int), y))
    assert m.loglik - saturated == pytest.approx(ref["logLik"], rel=1e-5)
    np.testing.assert_allclose(m.fixef.to_numpy(), list(ref["fixef"].values()), rtol=1e-3)
    np.testing.assert_allclose(m.theta, [ref["theta"]], rtol=1e-3)
    laplace = hj.glmer(ref["formula"], cbpp(), nAGQ=1)
    assert abs(m.loglik - laplace.loglik) > 1e-3   # quadrature really differs from the Laplace value
    with pytest.raises(hj.DesignError, match="nAGQ = 9"):   # batched refits are Laplace only: said, not ignored
        m.bootstrap(n=2)


@pytest.mark.slow
def test_verbagg_crossed_binomial():
    ref = REF["verbagg"]
    m = hj.glmer(ref["formula"], hj.datasets.load("verbagg"), family="binomial")
    check_fit(m, ref)


def test_cbpp_results_against_lme4():
    ref = REF["cbpp"]
    m = hj.glmer(ref["formula"], cbpp())
    tol = dict(rtol=2e-3, atol=2e-4)   # our optimum differs from lme4's by ~3e-4 in θ
    np.testing.assert_allclose(m.fitted().to_numpy()[:5], ref["fitted_first5"], **tol)
    np.testing.assert_allclose(m.predict(type="link").to_numpy()[:5], ref["predict_link_first5"], **tol)
    np.testing.assert_allclose(m.predict(re=False, type="response").to_numpy()[:5], ref["predict_population_first5"], **tol)
    for kind in ("deviance", "pearson", "response"):
        np.testing.assert_allclose(m.residuals(kind).to_numpy()[:5], ref[f"resid_{kind}_first5"], **tol)
    r = ref["ranef"]["herd"]
    got = m.ranef["herd"].loc[r["levels"]]
    np.testing.assert_allclose(got.iloc[:, 0], r["mode"], **tol)
    np.testing.assert_allclose(got.iloc[:, 1], r["condsd"], rtol=2e-3)
    np.testing.assert_allclose(m.tidy()["statistic"], ref["ztest"]["z"], rtol=1.5e-2)
    assert m.bic == pytest.approx(ref["BIC"], rel=1e-5)
    an = REF["cbpp_anova"]
    m0 = hj.glmer("cbind(incidence, size - incidence) ~ 1 + (1 | herd)", cbpp())
    table = hj.anova(m0, m).table
    assert table["Chisq"].iloc[1] == pytest.approx(an["Chisq"], rel=1e-4)
    assert table["p"].iloc[1] == pytest.approx(an["p"], rel=1e-3)


@pytest.mark.parametrize("key, reml", [("lmer_weights_offset", True), ("lmer_weights_offset_ml", False)])
def test_lmer_weights_and_offset(key, reml):
    ref = REF[key]
    ss = hj.datasets.load("sleepstudy")
    ss = ss.assign(w=1 + ss["Days"] % 3, off=2.0 * ss["Days"])
    m = hj.lmer(ref["formula"], ss, REML=reml, weights="w")
    assert m.objective == pytest.approx(-2 * ref["logLik"], rel=1e-8)
    np.testing.assert_allclose(m.fixef.to_numpy(), list(ref["fixef"].values()), rtol=1e-6)
    np.testing.assert_allclose(m.theta, ref["theta"], rtol=1e-4, atol=1e-5)
    assert m.sigma == pytest.approx(ref["sigma"], rel=1e-5)
    np.testing.assert_allclose(m.std_errors.to_numpy(), list(ref["se"].values()), rtol=1e-4)
    # the same offset as an argument, weights as an array: the same fit
    m2 = hj.lmer(ref["formula"].replace(" + offset(off)", ""), ss, REML=reml, weights=ss["w"].to_numpy(), offset="off")
    assert m2.objective == pytest.approx(m.objective, rel=1e-10)
    np.testing.assert_allclose(m2.fitted().to_numpy(), m.fitted().to_numpy(), rtol=1e-8)


@pytest.mark.slow
def test_gaussian_identity_glmer_is_lmer_ml():
    """The Laplace approximation is exact for a Gaussian response with the identity link."""
    df = hj.datasets.load("sleepstudy")
    lm = hj.lmer("Reaction ~ Days + (Days | Subject)", df, REML=False)
    gm = hj.glmer("Reaction ~ Days + (Days | Subject)", df, family="gaussian")
    assert gm.loglik == pytest.approx(lm.loglik, rel=1e-6)
    np.testing.assert_allclose(gm.fixef.to_numpy(), lm.fixef.to_numpy(), rtol=1e-6)
    np.testing.assert_allclose(gm.theta / gm.sigma, lm.theta, rtol=1e-5, atol=1e-6)
    assert gm.sigma == pytest.approx(lm.sigma, rel=1e-6)


@pytest.mark.slow
def test_grouped_interface_equals_joint_system():
    """The per-group (user-model) Laplace interface over padded tensors gives the row/joint system's value."""
    import jax
    import jax.numpy as jnp
    from hlm_jax.glmm import laplace_deviance, start_values
    m = hj.glmer("cbind(incidence, size - incidence) ~ period + (1 | herd)", cbpp())
    with jax.enable_x64(True):
        x = jnp.asarray(m._x)
        rows, grouped = make_problem(m.gd), make_problem(m.gd, grouped=True)
        assert float(laplace_deviance(x, grouped)) == pytest.approx(float(laplace_deviance(x, rows)), rel=1e-12)
        g1 = jax.grad(laplace_deviance)(jnp.asarray(start_values(m.gd)[0]), rows)
        g2 = jax.grad(laplace_deviance)(jnp.asarray(start_values(m.gd)[0]), grouped)
        np.testing.assert_allclose(g1, g2, rtol=1e-9)


@pytest.mark.slow
def test_binary_and_logical_responses_equal_the_binomial_counts():
    """cbpp expanded to one row per animal (0/1, then logical): the same fit; the log-likelihood differs by
    exactly the binomial coefficients Σ log C(n, k), which the grouped form includes."""
    d = cbpp()
    rows = [dict(herd=r.herd, period=r.period, y=int(i < r.incidence)) for r in d.itertuples() for i in range(r.size)]
    long = pd.DataFrame(rows)
    counts = hj.glmer(REF["cbpp"]["formula"], d)
    binary = hj.glmer("y ~ period + (1 | herd)", long)
    logical = hj.glmer("y ~ period + (1 | herd)", long.assign(y=long["y"].astype(bool)))
    from scipy.special import gammaln
    choose = np.sum(gammaln(d["size"] + 1) - gammaln(d["incidence"] + 1) - gammaln(d["size"] - d["incidence"] + 1))
    assert binary.loglik + choose == pytest.approx(counts.loglik, rel=1e-9)
    np.testing.assert_allclose(binary.fixef.to_numpy(), counts.fixef.to_numpy(), rtol=1e-6)
    assert logical.loglik == pytest.approx(binary.loglik, rel=1e-12)


def test_weighted_lmer_refuses_what_would_ignore_its_weights():
    """simulate, bootstrap, profile intervals and ddf do not know prior weights yet: they refuse, not ignore."""
    ss = hj.datasets.load("sleepstudy")
    m = hj.lmer("Reaction ~ Days + (1 | Subject)", ss.assign(w=1 + ss["Days"] % 3), weights="w")
    for call in (lambda: m.simulate(2), lambda: hj.bootstrap(m, n=4), lambda: m.confint(method="profile"),
                 lambda: m.summary(ddf="satterthwaite")):
        with pytest.raises(hj.NotYetSupportedError, match="prior weights"):
            call()
    assert np.isfinite(m.confint(method="wald").to_numpy()[-2:]).all()   # Wald intervals use the weighted fit
