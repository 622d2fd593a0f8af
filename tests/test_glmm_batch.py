"""Batched GLMM refits: the cbpp parametric bootstrap against lme4's bootMer (n = 2000, seed-independent
distribution summaries from tests/reference/glmm_lme4.json), pb_test and refits to many responses."""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest

import hlm_jax as hj

REF = json.loads((Path(__file__).parent / "reference" / "glmm_lme4.json").read_text())
CBPP = "cbind(incidence, size - incidence) ~ period + (1 | herd)"


def cbpp():
    d = hj.datasets.load("cbpp")
    return d.assign(period=d["period"].astype(str), herd=d["herd"].astype(str))


@pytest.mark.slow
def test_cbpp_bootstrap_matches_bootmer():
    ref = REF["cbpp_bootstrap"]
    m = hj.glmer(CBPP, cbpp())
    b = m.bootstrap(n=2000, seed=42)
    assert b.n_failed == 0
    r = b.replicates
    assert list(r.columns) == ref["names"]
    # A replicate without a single case in period 4 is separated (its β₄ runs off to −∞); lme4 stops such
    # fits early, we follow them further. They are rare (≈ 0.1%) and are left out of the sd comparison.
    separated = (r.abs() > 8).any(axis=1)
    assert separated.mean() < 0.005
    kept = r.loc[~separated]
    np.testing.assert_allclose(kept.std().to_numpy(), ref["sd"], rtol=0.10)
    q025, q975 = r.quantile(0.025).to_numpy(), r.quantile(0.975).to_numpy()
    np.testing.assert_allclose(q975, ref["q975"], rtol=0.10)
    np.testing.assert_allclose(q025[:4], ref["q025"][:4], rtol=0.10)
    # θ's 2.5% quantile sits just above the point mass of singular refits at θ = 0 (2% of replicates);
    # lme4 stops some of those short of the boundary, which lifts its quantile (0.18 against our 0.13):
    # ours is lower, and every θ we report at 0 is a verified optimum (test_singular_refits_are_optima).
    assert q025[4] <= ref["q025"][4]
    assert 0.01 < np.mean(b.theta[:, 0] < 1e-4) < 0.04


@pytest.mark.slow  # compiles the batched program (about 20 s on an idle 2-core machine)
def test_bootstrap_refits_equal_single_fits():
    """Each batched refit lands where a single fit of the same simulated response does."""
    m = hj.glmer(CBPP, cbpp())
    b = m.bootstrap(n=8, seed=3)
    import jax
    with jax.enable_x64(True):
        ys = np.asarray(m.simulate_array(8, 3))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for i in (0, 5):
            single = m.refit(ys[i])
            assert b.objective[i] == pytest.approx(single.objective, rel=1e-9)
            np.testing.assert_allclose(b.replicates.iloc[i, :4], single.fixef.to_numpy(), rtol=1e-5, atol=1e-6)
    assert b.converged.all()
