"""R's fixed-effects layout: column order and names, aliased columns dropped as R's qr, Categorical
level order, and the sparse statistics path equal to the padded dense one."""
from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

import hlm_jax as hj
from hlm_jax import fixed
from hlm_jax.design import build_design, uses_sparse_path
from hlm_jax.fit import crossed_stats, design_stats, wide_stats
from hlm_jax.likelihood import crossed, lmm, wide
from hlm_jax.model.layout import theta_layout

R_DEPT_ORDER = [15, 5, 10, 12, 6, 7, 4, 8, 9, 14, 1, 3, 11, 2]


def test_insteval_loads_with_r_factor_levels():
    d = hj.datasets.load("insteval")
    assert list(d["dept"].cat.categories) == R_DEPT_ORDER
    assert list(d["d"].cat.categories[:5]) == [1, 6, 7, 8, 12]  # R: levels "1","6","7","8","12",...
    assert d["y"].dtype.kind == "i"


def test_aliased_columns_are_the_later_ones_in_formula_order():
    rng = np.random.default_rng(1)
    x1, x2 = rng.normal(size=50), rng.normal(size=50)
    X = np.column_stack([np.ones(50), x1, x1 + 2 * x2, x2, x1 * (1 + 1e-9), rng.normal(size=50)])
    keep = fixed.independent_columns(X.T @ X)
    # R: qr(X)$pivot keeps 1, 2, 3, 6 and moves the aliased 4 (= (3 - 2)/2) and 5 (≈ 2) to the end
    assert list(keep) == [True, True, True, False, False, True]
    assert list(fixed.independent_columns(fixed.gram(sp.csc_matrix(X)))) == list(keep)


def test_tolerance_is_r_qr_default_on_the_residual_norm():
    rng = np.random.default_rng(2)
    x = rng.normal(size=200)
    e = rng.normal(size=200)
    e -= x * (x @ e) / (x @ x)  # residual direction orthogonal to x
    for rel, kept in [(1e-5, True), (1e-6, True), (1e-9, False)]:
        z = x + rel * np.linalg.norm(x) * e / np.linalg.norm(e)
        X = np.column_stack([x, z])
        assert fixed.independent_columns(X.T @ X)[1] == kept


@pytest.mark.parametrize("seed", range(6))
def test_kept_columns_and_their_factor_match_the_residual_rule(seed):
    """Well-conditioned X (one factorisation) and X with exactly aliased columns (the column scan) keep the
    columns whose residual on the kept columns before them is not ~0, by least squares on X itself; R is
    the Cholesky factor of the kept columns' XᵀX."""
    rng = np.random.default_rng(seed)
    n, p = 40, 3 + 4 * seed
    X = rng.normal(size=(n, p)) * 10.0 ** rng.integers(-3, 4, p)
    if seed % 2:
        for j in rng.choice(np.arange(1, p), size=p // 3, replace=False):
            X[:, j] = X[:, :j] @ rng.integers(-2, 3, j)
    kept = fixed.kept_columns(X.T @ X)
    expect = []
    for j in range(p):
        prev = X[:, [k for k in range(j) if expect[k]]]
        resid = X[:, j] - prev @ np.linalg.lstsq(prev, X[:, j], rcond=None)[0]
        expect.append(bool(resid @ resid > 1e-14 * (X[:, j] @ X[:, j])))
    assert list(kept.mask) == expect
    Xk = X[:, kept.mask]
    G, norms = Xk.T @ Xk, np.sqrt(np.sum(Xk ** 2, axis=0))
    assert np.allclose(kept.R, np.triu(kept.R)) and np.all(np.diag(kept.R) > 0)
    assert np.max(np.abs(kept.R.T @ kept.R - G) / np.outer(norms, norms)) < 1e-12
    assert not np.all(expect) or seed % 2 == 0


def test_lmer_drops_aliased_columns_named_as_lme4():
    d = hj.datasets.load("insteval").iloc[:1200]
    d = d.assign(**{c: d[c].cat.remove_unused_categories() for c in ["s", "d", "dept", "service"]})
    with pytest.warns(UserWarning, match=r"rank deficient: dropping \d+ column\(s\)"):
        design = build_design("y ~ service + dept + d + d:service + (1 | s)", d)
    info = design.info
    assert info.fixed_names[:3] == ("(Intercept)", "service1", "dept5")
    assert all(n.startswith("service1:d") for n in info.fixed_names if ":" in n)
    assert info.fixed_terms == ("(Intercept)", "service", "dept", "d", "service:d")
    assert info.sparse and uses_sparse_path(info.nobs, info.p)
    X = info.X.toarray()
    assert np.linalg.matrix_rank(X) == info.p  # what is kept has full rank ...
    reordered = build_design("y ~ 0 + service:d + d + service + dept + (1 | s)", d)  # same span, other order
    assert reordered.info.p == info.p


def _small_wide_data(seed=0, n=600):
    rng = np.random.default_rng(seed)
    g = rng.integers(0, 25, n)
    h = rng.integers(0, 4, n)
    d = rng.integers(0, 40, n)
    return pd.DataFrame({"g": pd.Categorical(g), "h": pd.Categorical(h), "d": pd.Categorical(d),
                         "x": rng.normal(size=n), "y": rng.normal(size=n) + 0.3 * g + 0.1 * d})


@pytest.mark.parametrize("formula", ["y ~ x + d + (1 + x | g)", "y ~ x + d + (1 | g) + (1 | h)"])
def test_sparse_statistics_equal_the_padded_ones(formula):
    data = _small_wide_data()
    dense, wide = build_design(formula, data, sparse=False), build_design(formula, data, sparse=True)
    assert not dense.info.sparse and wide.info.sparse
    stats = design_stats if len(dense.info.factors) == 1 else crossed_stats
    with jax.enable_x64(True):
        (a, _), (b, _) = stats(dense), stats(wide)
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=0, atol=1e-10)
    theta = jnp.asarray(theta_layout(dense.info.terms).start() * 0.7 + 0.1)
    objective = lmm.objective if len(dense.info.factors) == 1 else crossed.objective
    with jax.enable_x64(True):
        va, vb = (objective(theta, s, jnp.asarray(1.0)) for s in (a, b))
    assert abs(float(va) - float(vb)) < 1e-10 * abs(float(va))


@pytest.mark.parametrize("formula", ["y ~ x + d + (1 + x | g)", "y ~ x + d + (1 | g) + (1 | h)"])
def test_wide_criterion_equals_the_dense_one(formula):
    data = _small_wide_data(seed=4, n=300)
    design = build_design(formula, data, sparse=True)
    several = len(design.info.factors) > 1
    with jax.enable_x64(True):
        stats, beta0 = crossed_stats(design) if several else design_stats(design)
        w = wide_stats(design, stats.first if several else stats, beta0)
        dense = crossed.objective if several else lmm.objective
        layout = theta_layout(design.info.terms)
        for theta, reml in ((layout.start(), 1.0), (layout.start() * 0.3 + 0.05 * (layout.lower == -np.inf), 0.0)):
            args = (jnp.asarray(theta), jnp.asarray(reml))
            a, b = dense(args[0], stats, args[1]), wide.objective(args[0], w, args[1])
            assert abs(float(a) - float(b)) < 1e-10 * abs(float(a))
            ga, gb = jax.grad(dense)(args[0], stats, args[1]), jax.grad(wide.objective)(args[0], w, args[1])
            np.testing.assert_allclose(np.asarray(gb), np.asarray(ga), rtol=1e-8, atol=1e-8)


WIDE_FORMULAS = ["y ~ x + d + (1 + x | g)", "y ~ x + d + (1 | g) + (x | h)"]


def _wide_and_dense(formula):
    """A small wide design's wide statistics, its dense ones and the dense criterion's module."""
    design = build_design(formula, _small_wide_data(seed=4, n=300), sparse=True)
    several = len(design.info.factors) > 1
    stats, beta0 = crossed_stats(design) if several else design_stats(design)
    return design, wide_stats(design, stats.first if several else stats, beta0), stats, crossed if several else lmm


@pytest.mark.parametrize("formula", WIDE_FORMULAS)
def test_trace_identity_derivatives_equal_autodiff_of_the_dense_criterion(formula):
    with warnings.catch_warnings(), jax.enable_x64(True):
        warnings.simplefilter("ignore", UserWarning)
        design, w, stats, dense = _wide_and_dense(formula)
        layout = theta_layout(design.info.terms)
        derivs = jax.jit(lambda t, r: wide.gradient_and_hessian(None, t, (w, r)))
        grad_and_hessian = jax.jit(lambda t, r: (jax.grad(dense.objective)(t, stats, r),
                                                 jax.hessian(dense.objective)(t, stats, r)))
        for theta, reml in ((layout.start() * 1.3 + 0.1, 1.0), (layout.start() * 0.4 + 0.05, 0.0)):
            args = (jnp.asarray(theta), jnp.asarray(reml))
            g, H = derivs(*args)
            g_dense, H_dense = (np.asarray(v) for v in grad_and_hessian(*args))
            np.testing.assert_allclose(np.asarray(g), g_dense, rtol=1e-8, atol=1e-8)
            np.testing.assert_allclose(np.asarray(H), H_dense, rtol=1e-8, atol=1e-8 * np.abs(H_dense).max())


@pytest.mark.parametrize("formula", WIDE_FORMULAS)
def test_wide_estimates_equal_the_dense_ones(formula):
    with warnings.catch_warnings(), jax.enable_x64(True):
        warnings.simplefilter("ignore", UserWarning)
        design, w, stats, dense = _wide_and_dense(formula)
        theta = jnp.asarray(theta_layout(design.info.terms).start() * 0.7 + 0.1)
        est, b2, b2_covs = wide.estimates(theta, w, jnp.asarray(1.0))
        ref = dense.estimates(theta, stats, jnp.asarray(1.0))
        ref, ref_b2, ref_covs = ref if isinstance(ref, tuple) and not isinstance(ref, lmm.Estimates) else (ref, b2, b2_covs)
    G = design.info.n_groups
    for name in ("beta", "sigma", "vcov_beta", "objective"):
        np.testing.assert_allclose(np.asarray(getattr(est, name)), np.asarray(getattr(ref, name)), rtol=1e-9, err_msg=name)
    np.testing.assert_allclose(np.asarray(est.b)[:G], np.asarray(ref.b)[:G], rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(np.asarray(est.b_cov)[:G], np.asarray(ref.b_cov)[:G], rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(np.asarray(b2), np.asarray(ref_b2), rtol=1e-9, atol=1e-12)
    for a, b in zip(b2_covs, ref_covs):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-9, atol=1e-12)


def test_a_random_factor_nested_in_the_fixed_effects_is_named_and_reported_at_zero():
    rng = np.random.default_rng(5)
    lecturer = rng.integers(0, 30, 400)
    dept = lecturer % 5  # every lecturer in one department
    frame = pd.DataFrame({"d": pd.Categorical(lecturer), "dept": pd.Categorical(dept),
                          "y": rng.normal(size=400) + 0.2 * lecturer})
    with pytest.warns(UserWarning, match="variance of the random effects on 'dept' is not identified"):
        m = hj.lmer("y ~ d + (1 | dept)", frame)
    assert m.theta[0] == 0.0
    ols = hj.lm("y ~ d", frame)  # the criterion is flat in the dept variance: β̂ is the OLS fit
    np.testing.assert_allclose(m.fixef.to_numpy(), ols.coef.to_numpy(), rtol=1e-8, atol=1e-10)
