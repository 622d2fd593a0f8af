"""Batches of models with several grouping factors (issue 13): bootstrap, pb_test and fit_many for crossed
(penicillin) and nested (pastes) models, against lme4's bootMer and against single fits.

References: tests/reference/crossed_bootstrap_lme4.json, made by
tests/reference/make_crossed_bootstrap_references.R (bootMer, n = 2000, c(fixef, sigma, theta)).
"""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import warnings

import jax
import numpy as np
import pytest

import hlm_jax as hj
from conftest import load_reference
from hlm_jax.batch import rows
from hlm_jax.likelihood import linalg
from jax.scipy.linalg import solve_triangular

PENICILLIN = "diameter ~ 1 + (1 | plate) + (1 | sample)"
PASTES = "strength ~ 1 + (1 | batch/cask)"


def _fit(formula, data, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", hj.SingularFitWarning)
        return hj.lmer(formula, data, **kw)


@pytest.fixture(scope="module")
def penicillin():
    return hj.datasets.load("penicillin")


@pytest.fixture(scope="module")
def pen_model(penicillin):
    return _fit(PENICILLIN, penicillin)


@pytest.fixture(scope="module")
def pen_boot(pen_model):
    return hj.bootstrap(pen_model, n=2000, seed=0, progress=False)


def _compare_with_bootmer(boot, ref):
    """sd and 2.5%/97.5% quantiles of (fixef, sigma, θ) within 10% of lme4's. Where lme4's replicates
    of a θ element have a point mass at 0 (singular refits) above 2%, the 2.5% quantile sits at 0
    and is compared as that mass instead (within 0.04, three binomial sds of the two runs)."""
    draws = np.column_stack([boot.replicates[["(Intercept)", "sigma"]].to_numpy(), boot.theta])
    assert boot.n_failed == 0
    zero = np.mean(np.abs(draws) < 1e-4, axis=0)
    ours = {"sd": draws.std(axis=0, ddof=1), "q025": np.quantile(draws, 0.025, axis=0),
            "q975": np.quantile(draws, 0.975, axis=0)}
    massed = np.array(ref["zero_fraction"]) > 0.02
    for key, values in ours.items():
        check = ~massed if key == "q025" else np.ones(len(values), bool)
        np.testing.assert_allclose(values[check], np.array(ref[key])[check], rtol=0.10, err_msg=key)
    np.testing.assert_allclose(zero[massed], np.array(ref["zero_fraction"])[massed], atol=0.04)


def _refit_one_by_one(boot, formula, data, response, picks):
    """Replicates' responses refitted with hj.lmer give the batched fits (θ, estimates to 1e-6)."""
    ys = boot.responses(picks)
    for i, column in zip(picks, ys.columns):
        single = _fit(formula, data.assign(**{response: ys[column].to_numpy()}))
        assert single.converged and boot.converged[i]
        np.testing.assert_allclose(single.objective, boot.objective[i], rtol=1e-10)
        np.testing.assert_allclose(single.theta, boot.theta[i], rtol=1e-6, atol=1e-6)
        expected = list(single.fixef) + [single.sigma] + list(single.layout.sd_cor(single.theta, single.sigma)[0])
        np.testing.assert_allclose(boot.replicates.iloc[i].to_numpy(), expected, rtol=1e-6, atol=1e-8)


def test_crossed_bootstrap_matches_lme4(pen_boot):
    assert list(pen_boot.replicates.columns) == ["(Intercept)", "sigma", "sd_(Intercept)|plate",
                                                 "sd_(Intercept)|sample"]
    _compare_with_bootmer(pen_boot, load_reference("crossed_bootstrap_lme4")["penicillin"])


def test_crossed_replicates_refit_one_by_one(pen_boot, penicillin):
    picks = np.random.default_rng(7).choice(pen_boot.n, size=5, replace=False)
    _refit_one_by_one(pen_boot, PENICILLIN, penicillin, "diameter", picks)


@pytest.mark.slow
def test_nested_bootstrap_matches_lme4_and_single_fits():
    pastes = hj.datasets.load("pastes")
    model = _fit(PASTES, pastes)
    boot = hj.bootstrap(model, n=2000, seed=0, progress=False)
    _compare_with_bootmer(boot, load_reference("crossed_bootstrap_lme4")["pastes"])
    picks = np.random.default_rng(8).choice(boot.n, size=5, replace=False)
    _refit_one_by_one(boot, PASTES, pastes, "strength", picks)


def test_fit_many_crossed_responses_equal_single_fits(pen_model, penicillin):
    ys = pen_model.simulate(nsim=6, seed=4)
    table = hj.fit_many(PENICILLIN, penicillin, responses=ys, progress=False)
    for name, row in table.iterrows():
        single = _fit(PENICILLIN, penicillin.assign(diameter=ys[name].to_numpy()))
        np.testing.assert_allclose(row["objective"], single.objective, rtol=1e-10)
        np.testing.assert_allclose(row[["(Intercept)", "se_(Intercept)", "sigma"]].to_numpy(float),
                                   [single.fixef.iloc[0], single.std_errors.iloc[0], single.sigma], rtol=1e-6)
        np.testing.assert_allclose(row[single.varcorr_names()].to_numpy(float),
                                   single.layout.sd_cor(single.theta, single.sigma)[0], rtol=1e-6)



def _assert_rows_equal_single_fits(table, formula, datasets, **kw):
    for i, data in enumerate(datasets):
        single = _fit(formula, data, **kw)
        row = table.iloc[i]
        assert row["converged"] and row["nobs"] == single.info.nobs and row["ngroups"] == single.info.n_groups
        np.testing.assert_allclose(row["objective"], single.objective, rtol=1e-10)
        names = list(single.fixef.index)
        np.testing.assert_allclose(row[names].to_numpy(float), single.fixef.to_numpy(), rtol=1e-6, atol=1e-8)
        np.testing.assert_allclose(row[[f"se_{n}" for n in names]].to_numpy(float), single.std_errors.to_numpy(),
                                   rtol=1e-6)
        np.testing.assert_allclose(row[["sigma"] + single.varcorr_names()].to_numpy(float),
                                   [single.sigma] + list(single.layout.sd_cor(single.theta, single.sigma)[0]),
                                   rtol=1e-6, atol=1e-8)


def test_fit_many_over_crossed_data_sets_equals_single_fits(pen_model, penicillin):
    """Data sets with their own levels (plates or a sample left out: padded to one shape) fitted in one
    program equal hj.lmer on each (crossed, REML)."""
    ys = pen_model.simulate(nsim=3, seed=5).to_numpy()
    sets = [penicillin.assign(diameter=ys[:, i]) for i in range(3)] + [penicillin]
    sets[1] = sets[1][~sets[1]["plate"].isin(["a", "b", "c"])]
    sets[2] = sets[2][sets[2]["sample"] != "F"]
    table = hj.fit_many(PENICILLIN, sets, progress=False)
    assert list(table["ngroups"]) == [24, 21, 24, 24]
    _assert_rows_equal_single_fits(table, PENICILLIN, sets)


def test_fit_many_over_nested_data_sets_equals_single_fits():
    """pastes and two subsets of its batches (nested casks), by ML; a data set whose grouping factors come in
    another order (fewer levels of the first) is refused by name."""
    pastes = hj.datasets.load("pastes")
    sets = [pastes, pastes[pastes["batch"] != "A"], pastes[~pastes["batch"].isin(["B", "C", "D"])]]
    table = hj.fit_many(PASTES, sets, REML=False, progress=False)
    _assert_rows_equal_single_fits(table, PASTES, sets, REML=False)
    with pytest.raises(hj.DesignError, match="data set 1 has fixed effects"):
        hj.fit_many(PENICILLIN, [hj.datasets.load("penicillin"),
                                 hj.datasets.load("penicillin").query("plate in ['a', 'b', 'c', 'd']")])

@pytest.mark.slow
def test_pb_test_of_a_crossed_variance_component_equals_single_fits(penicillin):
    """Testing (1 | sample): the statistic and a few bootstrap draws equal single ML fits' deviance differences."""
    small, big = _fit("diameter ~ 1 + (1 | plate)", penicillin), _fit(PENICILLIN, penicillin)
    test = hj.pb_test(small, big, n=200, seed=3, progress=False)
    small_ml, big_ml = _fit(small.formula, penicillin, REML=False), _fit(PENICILLIN, penicillin, REML=False)
    np.testing.assert_allclose(test.stat, small_ml.objective - big_ml.objective, rtol=1e-8)
    assert test.df == 1 and test.n_failed == 0
    with jax.enable_x64(True):   # the simulator as pb_test builds it (float64 draws)
        ys = rows.RowSource(rows.row_simulator(small_ml, []), small_ml.info.row_index).responses(3, np.arange(4))
    for i, y in enumerate(ys):
        data = penicillin.assign(diameter=y)
        expected = _fit(small.formula, data, REML=False).objective - _fit(PENICILLIN, data, REML=False).objective
        np.testing.assert_allclose(test.reference[i], max(expected, 0.0), rtol=1e-6, atol=1e-7)


SHARDED = textwrap.dedent("""
    import os, sys
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"
    import jax, numpy as np
    import hlm_jax as hj
    assert len(jax.devices()) == 4
    m = hj.lmer("diameter ~ 1 + (1 | plate) + (1 | sample)", hj.datasets.load("penicillin"))
    boot = hj.bootstrap(m, n=300, seed=0, progress=False)
    assert boot.timing["devices"] == 4
    np.savez(sys.argv[1], replicates=boot.replicates.to_numpy(), objective=boot.objective)
""")


@pytest.mark.slow
def test_crossed_bootstrap_sharded_over_four_devices_equals_one_device(pen_model, tmp_path):
    out = tmp_path / "sharded.npz"
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    subprocess.run([sys.executable, "-c", SHARDED, str(out)], check=True, env=env, timeout=900)
    sharded = dict(np.load(out))
    one = hj.bootstrap(pen_model, n=300, seed=0, progress=False)
    np.testing.assert_allclose(sharded["objective"], one.objective, rtol=1e-10)
    np.testing.assert_allclose(sharded["replicates"], one.replicates.to_numpy(), rtol=1e-6, atol=1e-8)


def test_column_linear_algebra_equals_lapack_with_its_derivatives():
    """The rank-one-update Cholesky and triangular solves (batched programs use them for 6 < k ≤ 64, where
    batched LAPACK calls can deadlock) equal LAPACK's, and so do their second derivatives."""
    with jax.enable_x64(True):
        rng = np.random.default_rng(3)
        A = rng.normal(size=(10, 10))
        M0, S = A @ A.T + 10 * np.eye(10), rng.normal(size=(3, 10, 10))
        S = S + S.transpose(0, 2, 1)
        B = rng.normal(size=(10, 3))

        def ours(t):
            L = linalg.cholesky(M0 + jax.numpy.einsum("k,kij->ij", t, S))
            return jax.numpy.sum(linalg.solve_lower(L, B) ** 3) + jax.numpy.sum(linalg.solve_upper_t(L, B) ** 2)

        def lapack(t):
            L = jax.numpy.linalg.cholesky(M0 + jax.numpy.einsum("k,kij->ij", t, S))
            return (jax.numpy.sum(solve_triangular(L, B, lower=True) ** 3)
                    + jax.numpy.sum(solve_triangular(L, B, lower=True, trans=1) ** 2))

        t = jax.numpy.asarray([0.1, -0.2, 0.05])
        np.testing.assert_allclose(ours(t), lapack(t), rtol=1e-12)
        np.testing.assert_allclose(jax.hessian(ours)(t), jax.hessian(lapack)(t), rtol=1e-9, atol=1e-12)
