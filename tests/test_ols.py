"""hj.lm and anova(lm1, lm2) on all 73,421 InstEval ratings against the numbers R prints in the seed
(passey-exploring-simulating-multilevel: summary(lm(...)) and anova(instr_eval2, instr_eval3))."""
from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

import hlm_jax as hj


@pytest.fixture(scope="module")
def insteval():
    return hj.datasets.load("insteval")


def _fit(formula, data):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return hj.lm(formula, data)


def test_lm_matches_r_on_a_small_model():
    rng = np.random.default_rng(3)
    frame = pd.DataFrame({"x": rng.normal(size=40), "g": list("abcd") * 10})
    frame["y"] = 1 + 2 * frame["x"] + (frame["g"] == "b") + rng.normal(size=40)
    m = hj.lm("y ~ x + g", frame)
    X = np.column_stack([np.ones(40), frame["x"], *(frame["g"] == level for level in "bcd")]).astype(float)
    beta, rss, *_ = np.linalg.lstsq(X, frame["y"], rcond=None)
    np.testing.assert_allclose(m.coef.to_numpy(), beta, rtol=1e-10)
    assert m.rss == pytest.approx(float(rss[0]), rel=1e-10)
    se = np.sqrt(np.diag(np.linalg.inv(X.T @ X)) * rss[0] / 35)
    np.testing.assert_allclose(m.std_errors.to_numpy(), se, rtol=1e-9)
    assert list(m.coef.index) == ["(Intercept)", "x", "gb", "gc", "gd"]


def test_lm_rejects_a_random_term(insteval):
    with pytest.raises(hj.FormulaError, match="hj.lmer"):
        hj.lm("y ~ service + (1 | s)", insteval)


@pytest.mark.slow
def test_instr_eval_ols_fits_match_r(insteval):
    m1 = _fit("y ~ d", insteval)
    assert (round(m1.sigma, 3), m1.df_resid) == (1.222, 72293)
    assert (round(m1.r2, 4), round(m1.adj_r2, 4)) == (0.1725, 0.1596)
    assert (round(m1.fstatistic[0], 2), m1.fstatistic[1:]) == (13.37, (1127, 72293))
    assert m1.coef["d6"] == pytest.approx(-9.531e-01, abs=5e-5)
    assert m1.std_errors["d12"] == pytest.approx(4.309e-01, abs=5e-5)

    m2 = _fit("y ~ service + dept + d", insteval)
    assert len(m2.aliased) == 13 and m2.df_resid == 72292
    assert (round(m2.r2, 4), round(m2.adj_r2, 4), round(m2.fstatistic[0], 2)) == (0.173, 0.1601, 13.41)
    printed = {"(Intercept)": (3.7272727, 0.3684220), "service1": (-0.0973856, 0.0136723),
               "dept5": (-0.5809547, 0.4850535), "dept2": (-0.7936066, 0.3869406),
               "d12": (1.1414884, 0.2471467), "d13": (-0.0754818, 0.2824192)}
    for name, (est, se) in printed.items():
        assert (m2.coef[name], m2.std_errors[name]) == pytest.approx((est, se), abs=5e-8)

    m3 = _fit("y ~ service + dept + d + service:d", insteval)
    assert len(m3.aliased) == 479 and m3.df_resid == 71631
    assert (round(m3.sigma, 3), round(m3.r2, 4), round(m3.adj_r2, 4)) == (1.215, 0.19, 0.1698)
    assert (round(m3.fstatistic[0], 3), m3.fstatistic[1]) == (9.392, 1789)
    assert m3.coef["d12"] == pytest.approx(-1.310, abs=5e-4)  # d12 changes sign once service:d enters
    assert m3.coef["service1"] == pytest.approx(-1.238, abs=5e-4)

    table = hj.anova(m2, m3).table
    assert list(table["Res.Df"]) == [72292, 71631]
    assert round(table["RSS"].iloc[0]) == 107938 and round(table["RSS"].iloc[1]) == 105724
    assert (table["Df"].iloc[1], round(table["Sum of Sq"].iloc[1], 1), round(table["F"].iloc[1], 4)) == \
        (661, 2213.8, 2.2692)
    assert table["Pr(>F)"].iloc[1] < 2.2e-16
    assert "service1:d6" in m3.coef.index and "Model 2: y ~ service + dept + d + service:d" in str(hj.anova(m2, m3))
