"""SEs of variance and residual-structure parameters from the exact Hessian (issue #16, point 3).

Checked against nlme's apVar (delta method from its finite-difference Hessian; references from
make_residual_references.R, `se_var`) where that agrees with a direct computation, and against a
dense finite-difference Hessian of the restricted log-likelihood written out independently here
(for AR(1), where nlme's apVar is off by 6%: 0.1774 against 0.1672 for Phi, which the dense
computation confirms).
"""
from __future__ import annotations

import numpy as np
import pytest

import hlm_jax as hj

from conftest import load_reference

ORTHODONT = "distance ~ age * Sex + (1|Subject)"


def check_se(table, ref: dict, rel: float) -> None:
    for name, se in ref["se_var"].items():
        row = f"{name}|Subject" if name.startswith("sd_") else name
        assert table.loc[row, "std_error"] == pytest.approx(se, rel=rel), name


def test_varident_se_against_nlme():
    m = hj.lmer(ORTHODONT, hj.datasets.load("orthodont"), weights=hj.VarIdent("Sex"))
    table = m.variance_table()
    assert list(table.index) == ["sd_(Intercept)|Subject", "Male", "sigma"]
    assert list(table["scale"]) == ["log", "log", "log"]
    np.testing.assert_allclose(table["estimate"], [1.84757104108394, 2.13723470010416, 0.781300702447315], rtol=1e-6)
    check_se(table, load_reference("orthodont_varident_reml_se"), rel=1e-3)


@pytest.mark.slow
@pytest.mark.parametrize("case, formula, kw", [
    ("orthodont_cs_reml", "distance ~ age * Sex + (0 + age|Subject)", dict(correlation=hj.CompSymm())),
    ("orthodont_ar1_varident_reml", ORTHODONT, dict(correlation=hj.AR1(), weights=hj.VarIdent("Sex"))),
])
def test_se_against_nlme(case, formula, kw):
    table = hj.lmer(formula, hj.datasets.load("orthodont"), **kw).variance_table()
    check_se(table, load_reference(case), rel=5e-3)  # nlme differentiates by finite differences


def dense_reml_loglik(psi, X, y, groups):
    """Restricted log-likelihood of a random intercept + AR(1) model, V_g = sd²11ᵀ + σ²Phi^|s−t|, by dense algebra."""
    sd, phi, sigma = np.exp(psi[0]), np.tanh(psi[1]), np.exp(psi[2])
    A, b, logdet, parts = np.zeros((X.shape[1],) * 2), np.zeros(X.shape[1]), 0.0, []
    for idx in groups:
        t = np.arange(len(idx))
        V = sd ** 2 + sigma ** 2 * phi ** np.abs(t[:, None] - t[None, :])
        Vi = np.linalg.inv(V)
        logdet += np.linalg.slogdet(V)[1]
        A += X[idx].T @ Vi @ X[idx]
        b += X[idx].T @ Vi @ y[idx]
        parts.append((idx, Vi))
    beta = np.linalg.solve(A, b)
    quad = sum((y[i] - X[i] @ beta) @ Vi @ (y[i] - X[i] @ beta) for i, Vi in parts)
    n, p = X.shape
    return -0.5 * (logdet + np.linalg.slogdet(A)[1] + quad + (n - p) * np.log(2 * np.pi))


def test_ar1_se_against_a_dense_finite_difference_hessian():
    d = hj.datasets.load("orthodont")
    m = hj.lmer(ORTHODONT, d, correlation=hj.AR1())
    table = m.variance_table()
    assert list(table["scale"]) == ["log", "atanh", "log"]
    male = (d["Sex"] == "Male").to_numpy(float)
    X = np.column_stack([np.ones(len(d)), d["age"], male, d["age"] * male])
    groups = [np.flatnonzero(d["Subject"].to_numpy() == s) for s in d["Subject"].unique()]
    est = table["estimate"].to_numpy()
    psi = np.array([np.log(est[0]), np.arctanh(est[1]), np.log(est[2])])
    h, H = 1e-4, np.zeros((3, 3))
    for i in range(3):
        for j in range(3):
            ei, ej = np.eye(3)[i] * h, np.eye(3)[j] * h
            H[i, j] = sum(s * dense_reml_loglik(psi + a * ei + c * ej, X, d["distance"].to_numpy(), groups)
                          for a, c, s in [(1, 1, 1), (1, -1, -1), (-1, 1, -1), (-1, -1, 1)]) / (4 * h * h)
    se = np.sqrt(np.diag(np.linalg.inv(-H))) * np.array([est[0], 1 - est[1] ** 2, est[2]])
    np.testing.assert_allclose(table["std_error"], se, rtol=1e-4)
