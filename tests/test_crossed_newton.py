"""The crossed criterion's Newton derivatives by trace identities (likelihood/crossed_newton.py) against
autodiff of the blocked Cholesky criterion, and the moment start against lme4's optimum."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import hlm_jax as hj
from conftest import load_reference
from hlm_jax.design import build_design
from hlm_jax.fit import crossed_stats
from hlm_jax.likelihood import crossed, crossed_newton
from hlm_jax.model.layout import theta_layout
from hlm_jax.optimize import gradient_and_hessian
from hlm_jax.scaling import design_scales, scale_design

CASES = [
    ("penicillin", "diameter ~ 1 + (1 | plate) + (1 | sample)"),             # scalar terms: the identities
    ("sleepstudy", "Reaction ~ Days + (Days | Subject) + (1 | Days)"),      # a vector term: products only
    pytest.param("pastes", "strength ~ 1 + (1 | batch/cask)", marks=pytest.mark.slow),  # nested, scalar
    pytest.param("sleepstudy", "Reaction ~ Days + (1 | Subject) + (0 + Days | Days)",   # a level with Z = 0
                 marks=pytest.mark.slow),
]


def scaled_stats(dataset: str, formula: str):
    design = build_design(formula, hj.datasets.load(dataset))
    layout = theta_layout(design.info.terms)
    with jax.enable_x64(True):
        return crossed_stats(scale_design(design, design_scales(design, layout)))[0], layout


@pytest.mark.parametrize("dataset, formula", CASES)
def test_trace_identities_equal_autodiff(dataset, formula):
    stats, layout = scaled_stats(dataset, formula)
    with jax.enable_x64(True):
        autodiff = jax.jit(lambda t, s, r: gradient_and_hessian(crossed.objective, t, (s, r)))
        ours = jax.jit(lambda t, s, r: crossed_newton.newton_derivatives(crossed.objective, t, (s, r)))
        # the second point has a dense factor's λ below SMALL_LAMBDA (the formed-product branch)
        for theta in (np.linspace(0.3, 0.9, layout.size), np.linspace(0.005, 0.9, layout.size)[::-1]):
            for reml in (1.0, 0.0):
                g0, H0 = autodiff(jnp.asarray(theta), stats, jnp.asarray(reml))
                g1, H1 = ours(jnp.asarray(theta), stats, jnp.asarray(reml))
                np.testing.assert_allclose(g1, g0, rtol=1e-9, atol=1e-9 * np.abs(g0).max())
                np.testing.assert_allclose(H1, H0, rtol=1e-9, atol=1e-9 * np.abs(H0).max())


@pytest.mark.parametrize("dataset, formula", CASES)
def test_augmented_matrix_gives_the_criterion(dataset, formula):
    """log|L₁|² + Σ κ_r log L_rr² + dof(1 + log 2π/dof) over Ω's Cholesky factor is the criterion."""
    stats, layout = scaled_stats(dataset, formula)
    with jax.enable_x64(True):
        for reml in (1.0, 0.0):
            theta, r = jnp.asarray(np.linspace(0.2, 1.1, layout.size)), jnp.asarray(reml)
            logdet1, omega = crossed.augmented(theta, stats)
            kappa, _ = crossed_newton._nested(stats, r)
            dof = stats.first.n - r * stats.first.p
            value = logdet1 + jnp.sum(kappa * 2.0 * jnp.log(jnp.diag(jnp.linalg.cholesky(omega)))) \
                + dof * (1.0 + jnp.log(2.0 * jnp.pi / dof))
            np.testing.assert_allclose(value, crossed.objective(theta, stats, r), rtol=1e-13)


def test_moment_start_is_the_reml_optimum_on_balanced_data():
    """On balanced crossed data (penicillin: 24 plates × 6 samples, one each) Henderson's method 1 gives the
    ANOVA estimates, which are the REML estimates when positive: the start is θ̂."""
    ref = load_reference("penicillin_reml")
    stats, layout = scaled_stats(ref["data"], ref["formula"])
    m = hj.lmer(ref["formula"], hj.datasets.load(ref["data"]))
    start = crossed_newton.moment_start(stats, layout.start()) / m.scales.theta
    np.testing.assert_allclose(start, ref["theta"], rtol=1e-4)  # lme4 stops 3e-5 short
    np.testing.assert_allclose(start, m.theta, rtol=1e-7)


def test_moment_start_is_near_the_optimum_on_unbalanced_data():
    """With a third of penicillin's rows dropped the start is within 20% of θ̂ (and not θ̂); a vector term
    keeps the default start."""
    data = hj.datasets.load("penicillin").iloc[np.random.default_rng(1).permutation(144)[:100]]
    formula = "diameter ~ 1 + (1 | plate) + (1 | sample)"
    m = hj.lmer(formula, data)
    design = build_design(formula, data)
    layout = theta_layout(design.info.terms)
    with jax.enable_x64(True):
        stats = crossed_stats(scale_design(design, design_scales(design, layout)))[0]
    start = crossed_newton.moment_start(stats, layout.start()) / m.scales.theta
    np.testing.assert_allclose(start, m.theta, rtol=0.2)
    assert np.abs(start / m.theta - 1.0).max() > 1e-3
    vector, layout = scaled_stats(*CASES[1])
    np.testing.assert_array_equal(crossed_newton.moment_start(vector, layout.start()), layout.start())
