"""Profile-likelihood intervals of a GLMM against lme4 1.1-31's confint(method = "profile") and profile() on
cbpp (tests/reference/glmm_profile_cbpp.json, made by make_glmm_profile_reference.R)."""
from __future__ import annotations

import numpy as np
import pytest

import hlm_jax as hj
from conftest import load_reference
from hlm_jax.glmm_results import profile_zeta

CBPP = "cbind(incidence, size - incidence) ~ period + (1 | herd)"


@pytest.fixture(scope="module")
def fit():
    d = hj.datasets.load("cbpp")
    return hj.glmer(CBPP, d.assign(period=d["period"].astype(str), herd=d["herd"].astype(str)))


@pytest.mark.parametrize("level", [95, 80])
def test_profile_intervals_match_lme4(fit, level):
    ref = load_reference("glmm_profile_cbpp")[f"level_{level}"]
    ci = fit.confint(method="profile", level=level / 100)
    assert list(ci.index) == ref["names"]
    # lme4 interpolates a spline through its profile points: its ends agree with our roots to 1e-4
    np.testing.assert_allclose(ci["lower"], ref["lower"], rtol=2e-4)
    np.testing.assert_allclose(ci["upper"], ref["upper"], rtol=2e-4)


def test_profile_zeta_at_lme4_points(fit):
    """ζ itself at the values lme4's profile() visited (lme4's inner fits stop at about 1e-3 in ζ)."""
    samples = load_reference("glmm_profile_cbpp")["zeta_samples"]
    for k, name in [(0, "sd_(Intercept)|herd"), (4, "period4")]:
        zeta, _ = profile_zeta(fit, k)
        picks = np.linspace(0, len(samples[name]["value"]) - 1, 5).astype(int)
        ours = [zeta(samples[name]["value"][i]) for i in picks]
        np.testing.assert_allclose(ours, np.asarray(samples[name]["zeta"])[picks], atol=3e-3)
