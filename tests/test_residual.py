"""Residual structures (nlme's correlation= and weights=) against nlme 3.1-162 references.

References: tests/reference/orthodont_ar1_reml.json and orthodont_varident_reml.json (shared), the
others made by tests/reference/make_residual_references.R. Tolerances from issue #16: logLik 1e-6
relative, fixef 1e-4, se 1e-3, structure parameters and random-effect sds 1e-3.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import hlm_jax as hj
from hlm_jax.design import DesignError

from conftest import load_reference

REFERENCE = Path(__file__).parent / "reference"
ORTHODONT = "distance ~ age * Sex + (1|Subject)"


def orthodont():
    return hj.datasets.load("orthodont")


def panel():
    return pd.read_csv(REFERENCE / "car1_panel.csv")


def structure_values(ref: dict) -> list[float]:
    """nlme's corStruct then varStruct estimates (varIdent: the ratios after the reference level's 1)."""
    out = list((ref["corStruct"] or {}).values())
    var = ref["varStruct"] or {}
    values = list(var.values())
    return out + (values[1:] if len(values) > 1 and values[0] == 1 else values)


def check_against(model, ref: dict) -> None:
    assert model.converged
    assert model.loglik == pytest.approx(ref["logLik"], rel=1e-6)
    np.testing.assert_allclose(model.fixef.to_numpy(), list(ref["fixef"].values()), atol=1e-4)
    np.testing.assert_allclose(model.std_errors.to_numpy(), list(ref["se"].values()), atol=1e-3)
    np.testing.assert_allclose(model.residual_params.to_numpy(), structure_values(ref), atol=1e-3)
    re_sd = model.varcorr.query("grp != 'Residual' and var2.isnull()")["sdcor"].to_numpy()
    np.testing.assert_allclose(re_sd, list(ref["re_sd"].values()), atol=1e-3)
    assert model.sigma == pytest.approx(ref["sigma"], abs=1e-3)
    assert model.aic == pytest.approx(ref["AIC"], rel=1e-6)


CASES = [
    ("orthodont_ar1_reml", ORTHODONT, orthodont, dict(correlation=hj.AR1())),
    ("orthodont_varident_reml", ORTHODONT, orthodont, dict(weights=hj.VarIdent("Sex"))),
    ("orthodont_cs_reml", "distance ~ age * Sex + (0 + age|Subject)", orthodont, dict(correlation=hj.CompSymm())),
    ("orthodont_varpower_reml", ORTHODONT, orthodont, dict(weights=hj.VarPower("age"))),
    ("panel_car1_reml", "y ~ time + x + (1|id)", panel, dict(correlation=hj.CAR1("time"))),
]
SLOW_CASES = [
    ("orthodont_ar1_ml", ORTHODONT, orthodont, dict(correlation=hj.AR1(), REML=False)),
    ("orthodont_varexp_reml", ORTHODONT, orthodont, dict(weights=hj.VarExp("age"))),
    ("sleepstudy_ar1_reml", "Reaction ~ Days + (1|Subject)", lambda: hj.datasets.load("sleepstudy"),
     dict(correlation=hj.AR1())),
    ("orthodont_ar1_varident_reml", ORTHODONT, orthodont, dict(correlation=hj.AR1(), weights=hj.VarIdent("Sex"))),
    # nlme's default varPower(): a power of the fitted values, updated between fits until they settle
    ("orthodont_varpower_fitted_reml", ORTHODONT, orthodont, dict(weights=hj.VarPower("fitted"))),
]


@pytest.mark.parametrize("case, formula, data, kw", CASES, ids=[c[0] for c in CASES])
def test_against_nlme(case, formula, data, kw):
    check_against(hj.lmer(formula, data(), **kw), load_reference(case))


@pytest.mark.slow
@pytest.mark.parametrize("case, formula, data, kw", SLOW_CASES, ids=[c[0] for c in SLOW_CASES])
def test_against_nlme_more(case, formula, data, kw):
    check_against(hj.lmer(formula, data(), **kw), load_reference(case))


def test_car1_does_not_depend_on_row_order():
    """Rows are put in time order within groups: shuffling the data changes nothing."""
    shuffled = panel().sample(frac=1.0, random_state=3)
    m = hj.lmer("y ~ time + x + (1|id)", shuffled, correlation=hj.CAR1("time"))
    check_against(m, load_reference("panel_car1_reml"))


@pytest.mark.slow
def test_ar1_in_integer_times_takes_phi_to_the_gap():
    """AR1("t") with t = 2 × day: correlation Phi^(2 × lag), so its Phi is the square root of AR1()'s."""
    s = hj.datasets.load("sleepstudy")
    by_row = hj.lmer("Reaction ~ Days + (1|Subject)", s, correlation=hj.AR1())
    by_time = hj.lmer("Reaction ~ Days + (1|Subject)", s.assign(t=2 * s["Days"]), correlation=hj.AR1("t"))
    assert by_time.loglik == pytest.approx(by_row.loglik, rel=1e-10)
    assert by_time.residual_params["Phi"] ** 2 == pytest.approx(by_row.residual_params["Phi"], abs=1e-6)


def test_summary_reports_the_structure():
    m = hj.lmer(ORTHODONT, orthodont(), weights=hj.VarIdent("Sex"))
    text = m.summary()
    assert "Variance function" in text and "Female" in text and "2.13723" in text
    assert m.n_params == 4 + 1 + 1 + 1


@pytest.mark.filterwarnings("ignore:labels of 'Sex' repeat")
def test_bad_structures_are_named():
    d = orthodont()
    with pytest.raises(DesignError, match="'when'"):
        hj.lmer(ORTHODONT, d, correlation=hj.AR1("when"))
    with pytest.raises(DesignError, match="integers"):
        hj.lmer(ORTHODONT, d.assign(t=d["age"] / 3), correlation=hj.AR1("t"))
    with pytest.raises(DesignError, match="repeats"):
        hj.lmer(ORTHODONT, d.assign(t=0), correlation=hj.CAR1("t"))
    with pytest.raises(DesignError, match="numeric"):
        hj.lmer(ORTHODONT, d, weights=hj.VarPower("Sex"))
    with pytest.raises(DesignError, match="single level"):
        hj.lmer(ORTHODONT, d.assign(s="a"), weights=hj.VarIdent("s"))
    with pytest.raises(hj.NotYetSupportedError, match="single grouping factor"):
        hj.lmer("distance ~ age + (1|Subject) + (1|Sex)", d, correlation=hj.AR1())


def test_missing_structure_values_are_dropped_and_counted():
    d = orthodont().astype({"age": float})
    d.loc[5, "age"] = np.nan
    with pytest.warns(UserWarning, match="1 row"):
        m = hj.lmer("distance ~ Sex + (1|Subject)", d, weights=hj.VarPower("age"))
    assert m.nobs == 107
    assert np.isnan(d.loc[5, "age"])  # the user's data is not modified


# ---- bootstrap and fit_many with AR(1) residuals ---------------------------------------------------

def test_ar1_bootstrap_matches_nlme_refits_of_the_same_responses():
    """bootstrap(n=5, seed=1) of the Orthodont AR(1) fit: its responses are those in the CSV that nlme
    refitted (make_residual_bootstrap_reference.*), and its replicates are nlme's fits to 1e-5."""
    m = hj.lmer(ORTHODONT, orthodont(), correlation=hj.AR1())
    boot = m.bootstrap(n=5, seed=1)
    assert boot.converged.all()
    exported = pd.read_csv(REFERENCE / "orthodont_ar1_boot_responses.csv")
    # the same draws (the fitted parameters agree to the optimiser's tolerance, hence not bit for bit)
    np.testing.assert_allclose(boot.responses(range(5)).to_numpy(), exported.to_numpy(), rtol=1e-7)
    ref = load_reference("orthodont_ar1_boot_refits")["fits"]
    for i, fit in enumerate(ref.values()):
        row = boot.replicates.iloc[i]
        np.testing.assert_allclose(row[list(fit["fixef"])].to_numpy(float), list(fit["fixef"].values()), atol=1e-5)
        assert row["sigma"] == pytest.approx(fit["sigma"], abs=1e-5)
        assert row["sd_(Intercept)|Subject"] == pytest.approx(fit["re_sd"], abs=1e-5)
        assert row["Phi"] == pytest.approx(fit["Phi"], abs=1e-5)
    # fit_many on the same responses is the same batched refit, with the criterion reported
    table = hj.fit_many(ORTHODONT, orthodont(), responses=exported.to_numpy(), correlation=hj.AR1())
    np.testing.assert_allclose(table["Phi"], [f["Phi"] for f in ref.values()], atol=1e-5)
    np.testing.assert_allclose(-0.5 * table["objective"], [f["logLik"] for f in ref.values()], rtol=1e-6)


@pytest.mark.parametrize("formula, kw", [
    pytest.param(ORTHODONT, dict(weights=hj.VarIdent("Sex")), id="varident_stacked"),
    pytest.param("distance ~ age * Sex + (0 + age|Subject)", dict(correlation=hj.CompSymm()), id="compsymm_padded",
                 marks=pytest.mark.slow)])
def test_fit_many_equals_one_lmer_fit_per_response(formula, kw, monkeypatch):
    """The slot queue (two slots for four responses, so slots are refilled) refits each response as lmer
    fits it alone: stacked statistics rebuilt for the new y (VarIdent), padded tensors (CompSymm)."""
    from hlm_jax.batch import residual as batch_residual

    d = orthodont()
    model = hj.lmer(formula, d, **kw)
    Y = model.simulate(nsim=4, seed=5).to_numpy()
    monkeypatch.setattr(batch_residual, "queue_width", lambda model: 2)
    out, _ = batch_residual.fit_responses(model, Y.T, chunk=4)
    assert out["converged"].all()
    for j in range(Y.shape[1]):
        alone = hj.lmer(formula, d.assign(distance=Y[:, j]), **kw)
        assert -0.5 * out["objective"][j] == pytest.approx(alone.loglik, rel=1e-9)
        np.testing.assert_allclose(out["beta"][j], alone.fixef.to_numpy(), atol=1e-6)
        np.testing.assert_allclose(out["x"][j, 1:], alone.residual.eta, atol=1e-5)


@pytest.mark.slow
def test_ar1_simulation_has_the_fitted_lag_one_correlation():
    """Within-subject residuals of simulate() (random intercepts removed by differencing) have the
    covariance of an AR(1) with the fit's Phi: var(e_2 − e_1) = 2σ²(1 − Phi), averaged over draws."""
    s = hj.datasets.load("sleepstudy")
    m = hj.lmer("Reaction ~ Days + (1|Subject)", s, correlation=hj.AR1())
    ys = m.simulate(nsim=2000, seed=4).to_numpy() - m.predict(re=False).to_numpy()[:, None]
    days = s["Days"].to_numpy()
    diff = ys[days == 1] - ys[days == 0]
    phi = m.residual_params["Phi"]
    assert np.var(diff) == pytest.approx(2 * m.sigma ** 2 * (1 - phi), rel=0.03)


@pytest.mark.parametrize("formula, data, correlation, variance", [
    ("Reaction ~ Days + (Days|Subject)", "sleepstudy", hj.AR1(), None),
    (ORTHODONT, "orthodont", None, hj.VarIdent("Sex")),
    (ORTHODONT, "orthodont", hj.AR1(), hj.VarIdent("Sex")),
], ids=["ar1", "varident", "ar1_varident"])
def test_stacked_statistics_give_the_whitened_criterion(formula, data, correlation, variance):
    """AR(1) with unit gaps and VarIdent evaluate the criterion from stacked per-group statistics; it must
    equal the row-by-row whitening at any point (REML and ML)."""
    import dataclasses

    import jax
    import jax.numpy as jnp

    from hlm_jax.design import build_design
    from hlm_jax.residual_fit import StackedStats, objective, prepare, residual_data

    frame = hj.datasets.load(data)
    design = build_design(formula, frame)
    values = {c: frame.loc[design.info.row_index, c].to_numpy() for c in getattr(variance, "columns", ())}
    data = residual_data(design, values, correlation, variance)
    assert data.stacked
    rng = np.random.default_rng(1)
    with jax.enable_x64(True):
        stacked = prepare(data)
        assert isinstance(stacked, StackedStats)
        padded = dataclasses.replace(data, stacked=False)
        for _ in range(2):
            x = jnp.asarray(np.concatenate([rng.uniform(0.3, 1.5, data.n_theta),
                                            rng.uniform(-0.8, 0.8, len(data.residual.names))]))
            for reml in (0.0, 1.0):
                assert float(objective(x, stacked, reml)) == pytest.approx(float(objective(x, padded, reml)), rel=1e-12)


SHARDED = """
import os, sys
os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"
import jax, numpy as np
import hlm_jax as hj
assert len(jax.devices()) == 4
m = hj.lmer("distance ~ age * Sex + (1|Subject)", hj.datasets.load("orthodont"), correlation=hj.AR1())
boot = m.bootstrap(n=10, seed=3)
np.save(sys.argv[1], boot.replicates.to_numpy())
"""


@pytest.mark.slow
def test_ar1_bootstrap_over_four_devices_equals_one_device(tmp_path):
    """The bootstrap's batch axis is laid out over every device; four host devices give the same fits."""
    import os
    import subprocess
    import sys

    out = tmp_path / "sharded.npy"
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    subprocess.run([sys.executable, "-c", SHARDED, str(out)], check=True, env=env, timeout=600)
    m = hj.lmer(ORTHODONT, orthodont(), correlation=hj.AR1())
    np.testing.assert_allclose(np.load(out), m.bootstrap(n=10, seed=3).replicates.to_numpy(), rtol=1e-7, atol=1e-9)


def test_refit_by_ml_and_anova_keep_the_structure():
    """anova refits REML fits by ML (as lme4): with an AR(1) structure the ML refit is nlme's ML fit."""
    d = orthodont()
    ar1 = hj.lmer(ORTHODONT, d, correlation=hj.AR1())
    ml = ar1.refit(REML=False)
    assert ml.loglik == pytest.approx(load_reference("orthodont_ar1_ml")["logLik"], rel=1e-6)
    assert ml.residual_params["Phi"] == pytest.approx(load_reference("orthodont_ar1_ml")["corStruct"]["Phi"], abs=1e-3)
    plain = hj.lmer(ORTHODONT, d)
    table = hj.anova(plain, ar1)
    assert table.table["Chisq"].iloc[1] == pytest.approx(2 * (ml.loglik - plain.refit(REML=False).loglik), rel=1e-6)
    with pytest.raises(hj.NotYetSupportedError, match="residual structure"):
        ar1.confint()
