"""User-written per-group models (hj.GroupModel): a random-intercept model with Student-t residuals.

Checked against known answers: with ν fixed very large it is the Gaussian random-intercept model,
whose ML fit lmer gives (the Laplace approximation is exact there); with ν estimated on data
simulated with known parameters, every parameter is recovered within its standard errors; its
batched refits (bootstrap, fit_many) agree with lmer's on the same responses.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

import hlm_jax as hj


def t_logpdf(y, nu, mu, scale):
    """Student-t log-density; the ν-only constant is formed first, so that with a huge ν its large
    lgamma terms do not swallow the scale's term in rounding (jax.scipy.stats.t.logpdf adds them together)."""
    const = jax.scipy.special.gammaln((nu + 1) / 2) - jax.scipy.special.gammaln(nu / 2) - 0.5 * jnp.log(nu * jnp.pi)
    z = (y - mu) / scale
    return const - jnp.log(scale) - 0.5 * (nu + 1) * jnp.log1p(z * z / nu)


def loglik(params, g, b):
    mu = params["beta"][0] + params["beta"][1] * g["x"] + b[0]
    return jnp.sum(g["mask"] * t_logpdf(g["y"], params["nu"], mu, params["scale"]))


def fisher(params, g, b):
    """Expected information of the t likelihood in b (positive, unlike the observed one)."""
    nu, s = params["nu"], params["scale"]
    return jnp.reshape(jnp.sum(g["mask"]) * (nu + 1) / ((nu + 3) * s ** 2), (1, 1))


def draw(key, params, g, b):
    mu = params["beta"][0] + params["beta"][1] * g["x"] + b[0]
    return mu + params["scale"] * jax.random.t(key, params["nu"], g["x"].shape, dtype=g["x"].dtype)


MODEL = hj.GroupModel(loglik, constraints={"scale": "positive", "nu": "positive", "sd": "positive"},
                      random="sd", curvature_fn=fisher, simulate=draw)
START = {"beta": [0.0, 0.0], "scale": 1.0, "sd": 1.0}


def orthodont():
    return hj.datasets.load("orthodont").rename(columns={"distance": "y", "age": "x"})


@pytest.fixture(scope="module")
def gaussian_limit():
    return hj.fit_group(MODEL, orthodont(), "Subject", START, fixed={"nu": 1e8}, columns=["x", "y"])


def test_t_with_huge_nu_is_the_gaussian_fit(gaussian_limit):
    f = gaussian_limit
    m = hj.lmer("y ~ x + (1|Subject)", orthodont(), REML=False)
    assert f.converged
    assert f.loglik == pytest.approx(m.loglik, rel=1e-6)
    est = f.table["estimate"]
    np.testing.assert_allclose(est[["beta[0]", "beta[1]"]], m.fixef.to_numpy(), rtol=1e-6)
    assert est["scale"] == pytest.approx(m.sigma, rel=1e-6)
    assert est["sd"] == pytest.approx(m.varcorr["sdcor"].iloc[0], rel=1e-6)
    assert list(f.table["scale"]) == ["identity", "identity", "log", "log"]
    # ML standard errors of the fixed effects (lmer's vcov is the ML one for an ML fit)
    np.testing.assert_allclose(f.table["std_error"][["beta[0]", "beta[1]"]], m.std_errors.to_numpy(), rtol=1e-5)


def test_batched_refits_match_lmer_on_the_same_responses(gaussian_limit):
    Y = gaussian_limit.simulate(nsim=4, seed=2).T
    ours = gaussian_limit.fit_many(Y)
    theirs = hj.fit_many("y ~ x + (1|Subject)", orthodont(), responses=Y, REML=False)
    assert ours["converged"].all()
    np.testing.assert_allclose(ours["beta[0]"], theirs["(Intercept)"], rtol=1e-6)
    np.testing.assert_allclose(ours["beta[1]"], theirs["x"], rtol=1e-6)
    np.testing.assert_allclose(ours["scale"], theirs["sigma"], rtol=1e-5)
    np.testing.assert_allclose(ours["sd"], theirs["sd_(Intercept)|Subject"], rtol=1e-5)


def simulated_t_panel(seed=0, groups=150, size=8):
    rng = np.random.default_rng(seed)
    g = np.repeat(np.arange(groups), size)
    x = rng.normal(size=g.size)
    y = 1.0 + 0.5 * x + 0.8 * rng.normal(size=groups)[g] + 0.5 * rng.standard_t(4.0, size=g.size)
    return pd.DataFrame({"g": g, "x": x, "y": y})


@pytest.mark.slow
def test_student_t_recovers_known_parameters():
    truth = {"beta[0]": 1.0, "beta[1]": 0.5, "scale": 0.5, "sd": 0.8, "nu": 4.0}
    f = hj.fit_group(MODEL, simulated_t_panel(), "g", {**START, "nu": 10.0}, columns=["x", "y"])
    assert f.converged
    for name, value in truth.items():
        est, se = f.table.loc[name, ["estimate", "std_error"]]
        assert abs(est - value) < 2.0 * se, (name, est, se)
    # the t model beats the Gaussian one on t data
    assert f.loglik > hj.lmer("y ~ x + (1|g)", simulated_t_panel(), REML=False).loglik + 10


def test_bad_constraint_is_named():
    with pytest.raises(ValueError, match="'bounded'"):
        hj.GroupModel(loglik, constraints={"nu": "bounded"})
