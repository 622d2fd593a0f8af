"""lme4's identifiability checks, and results that used to be silently wrong (issue 14, items 3 and 4)."""
from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

import hlm_jax as hj
from hlm_jax import IdentifiabilityError


def test_a_factor_with_a_level_per_observation_is_lme4s_error(sleepstudy):
    data = sleepstudy.assign(obs=np.arange(len(sleepstudy)))
    with pytest.raises(IdentifiabilityError, match=r"number of levels of each grouping factor must be < number of "
                                                   r"observations \(problems: obs\)") as err:
        hj.lmer("Reaction ~ Days + (1 | obs)", data)
    assert isinstance(err.value, ValueError)


def test_fewer_observations_than_random_effects_is_lme4s_error(sleepstudy):
    two_days = sleepstudy[sleepstudy.Days < 2]   # 36 rows, 2 × 18 random effects
    with pytest.raises(IdentifiabilityError, match=r"number of observations \(=36\) <= number of random effects "
                                                   r"\(=36\) for term \(1 \+ Days \| Subject\); the random-effects "
                                                   r"parameters and the residual variance"):
        hj.lmer("Reaction ~ Days + (Days | Subject)", two_days)
    assert hj.lmer("Reaction ~ Days + (Days | Subject)", sleepstudy[sleepstudy.Days < 3]).converged   # 54 > 36


@pytest.mark.filterwarnings("ignore:the variance of the random effects")
def test_no_residual_degrees_of_freedom_is_an_error():
    data = pd.DataFrame({"y": [1.0, 2.5, 2.0, 4.5], "a": [0.0, 1, 0, 3], "b": [1.0, 0, 2, 0],
                         "c": [0.0, 0, 1, 1], "g": ["u", "u", "v", "v"]})
    with pytest.raises(IdentifiabilityError, match=r"number of observations \(=4\) <= number of fixed-effect "
                                                   r"coefficients \(=4\)"):
        hj.lmer("y ~ a + b + c + (1 | g)", data)


def test_interaction_levels_with_colons_stay_distinct():
    """'x:y' with 'z' and 'x' with 'y:z' are two groups: the fit equals one on an explicit four-level factor."""
    rng = np.random.default_rng(3)
    a, b = np.tile(["x:y", "x", "p", "q"], 12), np.tile(["z", "y:z", "r", "s"], 12)
    data = pd.DataFrame({"a": a, "b": b, "y": rng.normal(size=48) + np.tile([0.0, 3.0, -1.0, 1.0], 12)})
    m = hj.lmer("y ~ 1 + (1 | a:b)", data)
    explicit = hj.lmer("y ~ 1 + (1 | ab)", data.assign(ab=np.tile(["g1", "g2", "g3", "g4"], 12)))
    assert m.ngroups["a:b"] == 4 and m.ranef["a:b"].index.is_unique
    assert m.objective == pytest.approx(explicit.objective, rel=1e-10)
    modes = m.ranef["a:b"]["(Intercept)"]
    assert modes["`x:y`:z"] == pytest.approx(explicit.ranef["ab"].loc["g1", "(Intercept)"], rel=1e-8)
    assert modes["x:`y:z`"] == pytest.approx(explicit.ranef["ab"].loc["g2", "(Intercept)"], rel=1e-8)
    new = data.iloc[:2]
    np.testing.assert_allclose(m.predict(new), explicit.predict(new.assign(ab=["g1", "g2"])), rtol=1e-8)
    lm = hj.lmlist("y ~ 1 | a:b", data)
    assert lm.coef.index.is_unique and len(lm.coef) == 4


def test_fit_many_names_the_data_set_with_a_level_the_first_lacks(sleepstudy):
    first = sleepstudy.assign(g=np.where(sleepstudy.Days < 5, "a", "b"))
    second = sleepstudy.assign(g=np.where(sleepstudy.Days < 5, "a", "c"))
    with pytest.raises(hj.DesignError, match=r"data set 1: .*level 'c'"):
        hj.fit_many("Reaction ~ g + (1 | Subject)", [first, second], progress=False)


def test_fit_many_names_the_data_set_with_an_inf(sleepstudy):
    good = sleepstudy.astype({"Days": float})
    bad = good.copy()
    bad.loc[7, "Days"] = np.inf
    with pytest.raises(hj.DesignError, match=r"data set 2: column 'Days' is not finite .* 1 row\(s\): 7"):
        hj.fit_many("Reaction ~ Days + (1 | Subject)", [good, good, bad], progress=False)


def test_a_huge_covariate_gets_the_correct_fit(sleepstudy):
    """Days × 1e12 was NaN: now β_Days is the unscaled one / 1e12 and everything else is unchanged."""
    base = hj.lmer("Reaction ~ Days + (1 | Subject)", sleepstudy)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m = hj.lmer("Reaction ~ big + (1 | Subject)", sleepstudy.assign(big=sleepstudy.Days * 1e12))
    assert m.converged
    assert m.fixef["big"] == pytest.approx(base.fixef["Days"] / 1e12, rel=1e-8)
    assert m.fixef["(Intercept)"] == pytest.approx(base.fixef["(Intercept)"], rel=1e-10)
    assert m.objective == pytest.approx(base.objective + 2 * np.log(1e12), rel=1e-10)
