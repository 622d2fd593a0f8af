"""Designs reused across lmer calls with a residual structure (`residual_fit.DESIGNS`): a reused design gives
the fit a new build gives, and any change to the columns the design read (values, levels, rows) rebuilds it."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import hlm_jax as hj
from hlm_jax.residual_fit import DESIGNS

ORTHODONT = "distance ~ age * Sex + (1|Subject)"


def fit(data, **kw):
    return hj.lmer(ORTHODONT, data, correlation=hj.AR1(), **kw)


def test_a_reused_design_gives_the_same_fit_and_edits_rebuild_it():
    DESIGNS.clear()
    d = hj.datasets.load("orthodont")
    first = fit(d)
    again = fit(d)
    assert again.design is first.design  # reused
    assert again.loglik == first.loglik
    np.testing.assert_array_equal(again.fixef, first.fixef)
    # the user's data edited in place: a value the formula reads
    d.loc[3, "distance"] += 5.0
    edited = fit(d)
    assert edited.design is not first.design
    assert edited.info.y[3] == pytest.approx(first.info.y[3] + 5.0)
    assert edited.loglik != pytest.approx(first.loglik, rel=1e-6)
    # a column the formula does not read changes nothing; another DataFrame with equal columns reuses
    assert fit(d.assign(other=1.0)).design is edited.design
    # the factor's levels reordered: the same values, other coding (the design is rebuilt)
    male_first = d.assign(Sex=pd.Categorical(d["Sex"], categories=["Male", "Female"]))
    assert list(fit(male_first).fixef.index) == ["(Intercept)", "age", "SexFemale", "age:SexFemale"]
    female_first = male_first.assign(Sex=male_first["Sex"].cat.reorder_categories(["Female", "Male"]))
    assert list(fit(female_first).fixef.index) == ["(Intercept)", "age", "SexMale", "age:SexMale"]
    # fewer rows
    assert fit(d.iloc[:-4]).nobs == len(d) - 4


def test_a_build_that_warned_warns_on_every_call():
    DESIGNS.clear()
    d = hj.datasets.load("orthodont").astype({"age": float})
    d.loc[5, "age"] = np.nan
    for _ in range(2):
        with pytest.warns(UserWarning, match="1 row"):
            m = hj.lmer("distance ~ Sex + (1|Subject)", d, weights=hj.VarPower("age"))
        assert m.nobs == 107


def test_other_structures_share_the_design_and_keep_their_own_fits():
    DESIGNS.clear()
    d = hj.datasets.load("orthodont")
    ar1 = fit(d)
    cs = hj.lmer(ORTHODONT, d, correlation=hj.CompSymm())
    assert cs.design is ar1.design
    DESIGNS.clear()
    fresh = hj.lmer(ORTHODONT, d, correlation=hj.CompSymm())
    assert fresh.design is not cs.design
    assert cs.loglik == fresh.loglik
    assert cs.residual_params["Rho"] == fresh.residual_params["Rho"]


def test_the_cache_keeps_the_latest_entries_within_its_bounds():
    from hlm_jax.design_cache import DesignCache

    cache, builds = DesignCache(size=2, max_bytes=8 * 100), []

    def build(tag):
        def run():
            builds.append(tag)
            return tag, ["x"]
        return run

    small, large = pd.DataFrame({"x": np.arange(10.0)}), pd.DataFrame({"x": np.arange(200.0)})
    assert [cache.get(k, small, build(k)) for k in "aba"] == ["a", "b", "a"]
    assert builds == ["a", "b"]  # "a" reused
    cache.get("c", small, build("c"))  # evicts the least recently used ("b")
    cache.get("b", small, build("b2"))
    assert builds == ["a", "b", "c", "b2"]
    cache.get("d", large, build("d"))
    cache.get("d", large, build("d2"))  # too large to keep
    assert builds[-2:] == ["d", "d2"]
