"""The seed's InstEval mixed models at full size (73,421 ratings, up to 2,269 fixed-effect columns)
against the numbers lme4 prints in passey-exploring-simulating-multilevel.txt.

me_instr_eval1 <- lmer(y ~ service + dept + d + d:service + (1 | studage/s))
me_instr_eval2 <- lmer(y ~ service + dept + d + d:service + (1 | s))
simple_me_reg  <- lmer(y ~ service + d + (1 | dept))
"""
from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import hlm_jax as hj
from hlm_jax.design import build_design
from hlm_jax.fit import design_stats
from hlm_jax.likelihood import lmm

WIDE = "y ~ service + dept + d + d:service"


@pytest.fixture(scope="module")
def insteval():
    return hj.datasets.load("insteval")


def _quiet_fit(formula, data):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        m = hj.lmer(formula, data)
    return m, [str(w.message) for w in caught]


@pytest.fixture(scope="module")
def eval1(insteval):
    return _quiet_fit(WIDE + " + (1 | studage/s)", insteval)


@pytest.fixture(scope="module")
def eval2(insteval):
    return _quiet_fit(WIDE + " + (1 | s)", insteval)


# lme4's summary(me_instr_eval1): Estimate and Std. Error of the 20 rows the seed shows
EVAL1_FIXEF = {
    "(Intercept)": (3.8136279, 0.3570932), "service1": (-1.0872627, 0.4648478), "dept5": (-0.3588668, 0.4856483),
    "dept10": (-0.0461133, 0.4083123), "dept12": (-1.6111457, 0.5720680), "dept6": (-1.5423850, 0.4262494),
    "dept7": (-1.2465021, 0.4699869), "dept4": (-0.1863719, 0.4700122), "dept8": (0.8015823, 0.6132148),
    "dept9": (-0.1356342, 0.3700464), "dept14": (-0.0698464, 0.4162224), "dept1": (-0.3740825, 0.5188163),
    "dept3": (-0.6951642, 0.4867751), "dept11": (0.5016004, 0.9113838), "dept2": (0.0640467, 0.5739985),
    "d6": (0.4779126, 0.4954382), "d7": (0.7148472, 0.9808910), "d8": (0.3535770, 0.4761726),
    "d12": (-1.2978312, 0.5725438), "d13": (-0.1556240, 0.2820550),
}


@pytest.mark.slow
def test_me_instr_eval1_matches_lme4(eval1):
    m, messages = eval1
    assert round(m.objective) == 234042
    assert len(m.info.dropped_fixed) == 479 and m.info.p == 1790
    assert any("dropping 479 column(s)" in s for s in messages)
    vc = m.varcorr.set_index("grp")["vcov"]
    # lme4's variances 0.1042016, 0.0001142 and 1.3710352 (ours: 0.1041997, 0.00011417, 1.3710358; lme4's
    # optimiser stops within ~2e-6 of the optimum, so the estimates agree to about 1e-5 relative)
    assert vc["s:studage"] == pytest.approx(0.1042016, abs=5e-6)
    assert vc["studage"] == pytest.approx(0.0001142, abs=5e-8)
    assert vc["Residual"] == pytest.approx(1.3710352, abs=1e-6)
    for name, (est, se) in EVAL1_FIXEF.items():
        assert m.fixef[name] == pytest.approx(est, abs=5e-6), name
        assert m.std_errors[name] == pytest.approx(se, abs=5e-7), name


@pytest.mark.slow
def test_anova_of_me_instr_eval1_matches_lme4(eval1):
    table = hj.anova(eval1[0]).table
    assert list(table.index) == ["service", "dept", "d", "service:d"]
    assert list(table["npar"]) == [1, 13, 1114, 661]
    np.testing.assert_allclose(table["F value"], [188.7859, 48.0135, 13.7820, 2.2552], atol=2e-3)
    np.testing.assert_allclose(table["Sum Sq"], [258.8, 855.8, 21049.8, 2043.8], atol=0.5)


@pytest.mark.slow
def test_me_instr_eval2_and_the_lrt_match_lme4(eval1, eval2):
    m2 = eval2[0]
    assert round(m2.objective, 1) == 234042.3
    assert m2.fixef["(Intercept)"] == pytest.approx(3.8118440, abs=5e-6)
    assert m2.std_errors["d12"] == pytest.approx(0.5725443, abs=5e-6)
    table = hj.anova(m2, eval1[0], names=["me_instr_eval2", "me_instr_eval1"]).table
    assert list(table["npar"]) == [1792, 1793]
    assert table["Df"].iloc[1] == 1 and abs(table["Chisq"].iloc[1]) < 0.05
    assert round(table["deviance"].iloc[0]) == 232640


@pytest.mark.slow
def test_simple_me_reg_matches_lme4_and_warns_on_the_dept_variance(insteval):
    m, messages = _quiet_fit("y ~ service + d + (1 | dept)", insteval)
    assert any("variance of the random effects on 'dept' is not identified" in s for s in messages)
    assert round(m.objective, 1) == 238259.8
    assert m.sigma ** 2 == pytest.approx(1.49308, abs=5e-6)
    printed = {"(Intercept)": 3.727, "service1": -9.739e-02, "d6": -9.499e-01, "d7": 4.307e-01,
               "d8": -1.122, "d12": -7.945e-02, "d13": -2.498e-02}
    for name, est in printed.items():
        assert m.fixef[name] == pytest.approx(est, abs=5e-4 * max(1.0, abs(est)) if abs(est) > 0.1 else 5e-6)
    assert m.theta[0] == 0.0  # reported at 0; lme4's 0.01162 is where its optimiser stopped on a flat criterion


@pytest.mark.slow
def test_simple_me_reg_criterion_is_flat_in_the_dept_variance(insteval):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        design = build_design("y ~ service + d + (1 | dept)", insteval)
    with jax.enable_x64(True):
        stats, _ = design_stats(design)
        values = [float(lmm.objective(jnp.array([t]), stats, jnp.asarray(1.0))) for t in (0.0, 0.088, 1.0, 10.0)]
    np.testing.assert_allclose(values, values[0], rtol=1e-9)
