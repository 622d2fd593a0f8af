"""fixed.py's numpy linear algebra (blocked triangular solves, Cholesky least squares) against scipy.linalg's
LAPACK routines, on well-conditioned systems narrower and wider than one solve block."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg as sla

from hlm_jax import fixed


def _triangular(rng, p: int, lower: bool) -> np.ndarray:
    """A well-conditioned triangular matrix: diagonal in [1, 2], off-diagonal entries of size 1/p."""
    T = rng.normal(size=(p, p)) / p + np.diag(1.0 + rng.random(p))
    return np.tril(T) if lower else np.triu(T)


@pytest.mark.parametrize("p", [1, 7, fixed.SOLVE_BLOCK, fixed.SOLVE_BLOCK + 1, 3 * fixed.SOLVE_BLOCK + 17])
@pytest.mark.parametrize("lower", [True, False])
@pytest.mark.parametrize("m", [None, 1, 5])
def test_solve_triangular_matches_scipy(p, lower, m):
    rng = np.random.default_rng(p * 10 + (m or 0) + lower)
    T = _triangular(rng, p, lower)
    B = rng.normal(size=p if m is None else (p, m))
    other = np.triu(rng.normal(size=(p, p)), 1) if lower else np.tril(rng.normal(size=(p, p)), -1)
    got = fixed.solve_triangular(T + other, B, lower=lower)  # the other triangle is not read, as scipy's
    want = sla.solve_triangular(T, B, lower=lower)
    assert got.shape == want.shape
    assert np.max(np.abs(got - want)) < 1e-13 * max(1.0, np.max(np.abs(want)))
    assert np.max(np.abs(T @ got - B)) < 1e-13 * max(1.0, np.max(np.abs(B)))


def test_solve_triangular_leaves_its_arguments_unchanged():
    rng = np.random.default_rng(3)
    T, B = _triangular(rng, 100, True), rng.normal(size=(100, 3))
    T0, B0 = T.copy(), B.copy()
    fixed.solve_triangular(T, B)
    fixed.solve_triangular(T, B, lower=False)
    assert np.array_equal(T, T0) and np.array_equal(B, B0)


@pytest.mark.parametrize("p", [3, 150])
def test_least_squares_matches_scipy_cholesky_solve(p):
    rng = np.random.default_rng(p)
    X, y = rng.normal(size=(3 * p, p)), rng.normal(size=3 * p)
    want = sla.cho_solve(sla.cho_factor(X.T @ X), X.T @ y)
    assert np.allclose(fixed.least_squares(X, y), want, rtol=1e-12, atol=1e-14)
