"""Covariance structures of random terms (hlm_jax.model.covariance): unstructured, diagonal, scalar and
compound symmetry, against lme4 (`||`) and an nlme pdCompSymm reference.

Reference: tests/reference/machines_compsymm_nlme.json, made by
tests/reference/make_compound_symmetry_reference.R (nlme's lme with pdCompSymm on Machines).
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import hlm_jax as hj
from conftest import load_reference
from hlm_jax.model import CompoundSymmetry, Diagonal, Scalar, Unstructured, structure


def test_unstructured_lambda_is_lme4s_lower_triangle():
    s = Unstructured(("a", "b", "c"))
    theta = np.arange(1.0, 7.0)
    np.testing.assert_array_equal(s.lam(theta), [[1, 0, 0], [2, 4, 0], [3, 5, 6]])
    assert s.labels() == ("a", "b.a", "c.a", "b", "c.b", "c")
    np.testing.assert_array_equal(s.lower(), [0, -np.inf, -np.inf, 0, -np.inf, 0])
    assert s.single_entries() == ((0, 0), (1, 0), (2, 0), (1, 1), (2, 1), (2, 2))


def test_diagonal_and_scalar():
    np.testing.assert_array_equal(Diagonal(("a", "b")).lam(np.array([2.0, 3.0])), np.diag([2.0, 3.0]))
    np.testing.assert_array_equal(Scalar(("a", "b")).lam(np.array([2.0])), 2.0 * np.eye(2))
    assert Scalar(("a", "b")).single_entries() is None     # one θ in two entries of Λ
    with pytest.raises(ValueError, match="unknown covariance structure 'ar9'"):
        structure("ar9", ("a",))


@pytest.mark.parametrize("a, c", [(1.0, 2.0), (2.0, 0.5), (0.0, 1.0), (1.0, 0.0)])
def test_compound_symmetry_has_one_variance_and_one_correlation(a, c):
    s = CompoundSymmetry(("x", "y", "z"))
    cov = s.lam(np.array([a, c])) @ s.lam(np.array([a, c])).T
    var, cor = (a * a * 2 + c * c) / 3, (c * c - a * a) / (a * a * 2 + c * c)
    np.testing.assert_allclose(np.diag(cov), var)
    np.testing.assert_allclose(cov[np.triu_indices(3, 1)], cor * var)
    np.testing.assert_allclose(s.summary(4.0 * cov), [2.0 * np.sqrt(var), cor])
    assert s.summary_names() == ("sd_x", "cor_y.x")


def test_diag_syntax_equals_double_bar():
    sleep = hj.datasets.load("sleepstudy")
    diag = hj.lmer("Reaction ~ Days + diag(Days | Subject)", sleep)
    bars = hj.lmer("Reaction ~ Days + (Days || Subject)", sleep)
    np.testing.assert_allclose(diag.theta, bars.theta, rtol=1e-8)
    np.testing.assert_allclose(diag.objective, bars.objective, rtol=1e-12)
    assert diag.varcorr_names() == ["sd_(Intercept)|Subject", "sd_Days|Subject"]


@pytest.fixture(scope="module")
def machines():
    ref = load_reference("machines_compsymm_nlme")
    return pd.DataFrame(ref["data"]), ref


@pytest.mark.parametrize("method", ["REML", "ML"])
def test_compound_symmetry_matches_nlme_pdcompsymm(machines, method):
    """`cs(0 + Machine | Worker)` is nlme's random = list(Worker = pdCompSymm(~ 0 + Machine)): one sd and one
    correlation for the three machines; estimates, vcov(β̂) and the (restricted) log-likelihood as nlme's."""
    data, ref = machines
    expected = ref[method]
    m = hj.lmer("score ~ Machine + cs(0 + Machine | Worker)", data, REML=method == "REML")
    assert m.converged
    np.testing.assert_allclose(m.fixef.to_numpy(), expected["fixef"], rtol=1e-6)
    np.testing.assert_allclose(m.sigma, expected["sigma"], rtol=1e-5)
    sd, cor = m.layout.sd_cor(m.theta, m.sigma)[0]
    np.testing.assert_allclose([sd, cor], [expected["sd"], expected["cor"]], rtol=1e-5)
    assert m.varcorr_names() == ["sd_MachineA|Worker", "cor_MachineB.MachineA|Worker"]
    np.testing.assert_allclose(m.vcov.to_numpy(), np.array(expected["vcov"]), rtol=1e-5)
    np.testing.assert_allclose(m.loglik, expected["logLik"], rtol=1e-8)
    # the structure is a special case of the unstructured one: its optimum cannot be better
    full = hj.lmer("score ~ Machine + (0 + Machine | Worker)", data, REML=method == "REML")
    assert full.objective <= m.objective + 1e-8
