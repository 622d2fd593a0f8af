"""Units never change the answer, and `converged` means a verified local minimum.

Rescaling a column is a reparametrisation: with Days × c and Reaction × k the REML criterion shifts by
exactly 2 (n − p) log k + 2 log c, β_Days by k / c, θ's slope row by 1 / c. Before internal scaling,
Days × 1440 stopped at a saddle (slope variance 0, correlation 1) that was reported converged, and
Days × 0.001 hit the iteration limit.
"""
from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import hlm_jax as hj
from conftest import load_reference
from hlm_jax.design import build_design
from hlm_jax.fit import design_stats, fit_stats
from hlm_jax.model.layout import theta_layout
from hlm_jax.optimize import summarize

FORMULA = "Reaction ~ Days + (Days | Subject)"


@pytest.fixture(scope="module")
def base(sleepstudy):
    """The fit in the data's own units, checked against lme4."""
    m = hj.lmer(FORMULA, data=sleepstudy, REML=True)
    assert m.converged and m.objective == pytest.approx(load_reference("sleepstudy_rs_reml")["objective"], abs=1e-6)
    return m


@pytest.mark.parametrize("c, k", [(1440.0, 1.0), (1e-3, 1.0), (1e6, 1e-6), (1e-6, 1e6)])
def test_rescaled_covariate_and_response_transform_exactly(sleepstudy, base, c, k):
    data = sleepstudy.assign(Days=sleepstudy.Days * c, Reaction=sleepstudy.Reaction * k)
    with warnings.catch_warnings():
        warnings.simplefilter("error")        # neither a convergence nor a singular-fit warning
        m = hj.lmer(FORMULA, data)
    n, p = m.nobs, 2
    assert m.converged and not m.singular
    assert m.objective == pytest.approx(base.objective + 2 * (n - p) * np.log(k) + 2 * np.log(c), rel=1e-10)
    np.testing.assert_allclose(m.fixef.to_numpy(), base.fixef.to_numpy() * [k, k / c], rtol=1e-7)
    np.testing.assert_allclose(m.theta, base.theta * [1.0, 1.0 / c, 1.0 / c], rtol=1e-6)
    np.testing.assert_allclose(m.vcov.to_numpy(), base.vcov.to_numpy() * np.outer([k, k / c], [k, k / c]), rtol=1e-6)
    assert m.sigma == pytest.approx(base.sigma * k, rel=1e-8)
    np.testing.assert_allclose(m.ranef["Subject"].to_numpy(),
                               base.ranef["Subject"].to_numpy() * [k, k / c, k, k / c], rtol=1e-6, atol=1e-9 * k)


def _unscaled_fit(data):
    """The optimiser on the criterion in the data's own units (what `lmer` did before scaling)."""
    with jax.enable_x64(True):
        design = build_design(FORMULA, data)
        stats, _ = design_stats(design)
        layout = theta_layout(design.info.terms)
        raw = fit_stats(stats, jnp.asarray(layout.start()), jnp.asarray(layout.lower), jnp.asarray(1.0))
        return summarize(jax.tree_util.tree_map(np.asarray, raw.state)), np.asarray(raw.state.x)


def test_a_saddle_is_not_reported_as_converged(sleepstudy):
    """Unscaled, Days × 1440 ends at θ_slope = 0 where the free Hessian has negative curvature: the
    verification refuses it (it used to pass on a small gradient alone)."""
    opt, theta = _unscaled_fit(sleepstudy.assign(Days=sleepstudy.Days * 1440))
    assert theta[2] == 0.0
    assert not opt.converged and "saddle" in opt.message


def test_iteration_limit_is_not_converged_and_warns(sleepstudy):
    opt, _ = _unscaled_fit(sleepstudy.assign(Days=sleepstudy.Days * 1e-3))
    assert not opt.converged and "iteration limit" in opt.message
    with pytest.warns(hj.ConvergenceWarning, match="failed to converge"):
        hj.lmer(FORMULA, sleepstudy, max_iter=2)


def test_crossed_fit_is_invariant_to_units():
    pen = hj.datasets.load("penicillin")
    base = hj.lmer("diameter ~ 1 + (1 | plate) + (1 | sample)", pen)
    m = hj.lmer("diameter ~ 1 + (1 | plate) + (1 | sample)", pen.assign(diameter=pen.diameter * 1e5))
    assert m.converged
    assert m.objective == pytest.approx(base.objective + 2 * (m.nobs - 1) * np.log(1e5), rel=1e-10)
    np.testing.assert_allclose(m.theta, base.theta, rtol=1e-6)
    np.testing.assert_allclose(m.ranef["sample"].to_numpy(), base.ranef["sample"].to_numpy() * 1e5, rtol=1e-6)


def test_batched_fits_are_invariant_to_units(sleepstudy, base):
    frames = [sleepstudy.sample(frac=1, replace=True, random_state=i).reset_index(drop=True) for i in range(4)]
    scaled = [f.assign(Days=f.Days * 1440) for f in frames]
    a, b = hj.fit_many(FORMULA, frames, progress=False), hj.fit_many(FORMULA, scaled, progress=False)
    assert a.converged.all() and b.converged.all()
    np.testing.assert_allclose(b["objective"], a["objective"] + 2 * np.log(1440), rtol=1e-10)
    np.testing.assert_allclose(b["Days"], a["Days"] / 1440, rtol=1e-7)
    np.testing.assert_allclose(b["sd_Days|Subject"], a["sd_Days|Subject"] / 1440, rtol=1e-6)
    a = hj.lmer(FORMULA, frames[0]).bootstrap(n=16, seed=2, progress=False)
    b = hj.lmer(FORMULA, scaled[0]).bootstrap(n=16, seed=2, progress=False)
    assert a.converged.all() and b.converged.all()     # the same replicates, in minutes
    np.testing.assert_allclose(b.replicates["Days"], a.replicates["Days"] / 1440, rtol=1e-6)
    np.testing.assert_allclose(b.replicates["sd_Days|Subject"], a.replicates["sd_Days|Subject"] / 1440, rtol=1e-6)
    np.testing.assert_allclose(b.replicates["sigma"], a.replicates["sigma"], rtol=1e-6)
    np.testing.assert_allclose(b.responses([3]).to_numpy(), a.responses([3]).to_numpy(), rtol=1e-8)
