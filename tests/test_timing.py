"""Every single-model result reports its timing (issue 19): `seconds` of the whole call, `compile_s` of them
tracing, lowering and compiling, `run_s` the rest. Each first call uses a shape (fixed effects, groups, rows) no
other test uses, so it compiles in this process; the identical second call reuses the programs and compiles
nothing."""
from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

import hlm_jax as hj


def panel(groups: int, size: int, p: int, seed: int = 7) -> pd.DataFrame:
    """groups × size rows: p − 1 covariates x1.., a time index, a group factor g, a Gaussian y and a 0/1 z."""
    rng = np.random.default_rng(seed)
    g = np.repeat(np.arange(groups), size)
    x = rng.normal(size=(g.size, p - 1))
    eta = x @ np.linspace(0.5, -0.5, p - 1) + rng.normal(size=groups)[g]
    frame = pd.DataFrame(x, columns=[f"x{j + 1}" for j in range(p - 1)])
    return frame.assign(time=np.tile(np.arange(size), groups), g=g.astype(str),
                        y=eta + rng.normal(size=g.size), z=(eta + rng.logistic(size=g.size) > 0).astype(float))


def rhs(p: int) -> str:
    return " + ".join(f"x{j + 1}" for j in range(p - 1))


def check_first_then_warm(first: dict, second: dict) -> None:
    """The first call compiled (and its parts add up to at most its wall time); the identical second did not."""
    assert first["compile_s"] > 0
    for t in (first, second):
        assert t["seconds"] >= t["compile_s"] + t["run_s"] - 1e-9
        assert t["run_s"] >= 0
    assert second["compile_s"] == 0.0


LMER_DATA = panel(41, 7, 6)


@pytest.fixture(scope="module")
def lmer_call():
    """An lmer fit with six fixed effects over 41 groups of 7 rows, as a call."""
    return lambda: hj.lmer(f"y ~ {rhs(6)} + (1 | g)", LMER_DATA)


def test_lmer_reports_timing(lmer_call):
    first, second = lmer_call(), lmer_call()
    check_first_then_warm(first.timing, second.timing)
    assert np.array_equal(first.fixef, second.fixef)


def test_lmer_with_a_residual_structure_reports_timing():
    data = panel(23, 9, 4)
    call = lambda: hj.lmer(f"y ~ {rhs(4)} + (1 | g)", data, correlation=hj.AR1())
    first, second = call(), call()
    check_first_then_warm(first.timing, second.timing)
    assert first.objective == second.objective


def test_glmer_reports_timing():
    data = panel(45, 6, 5)
    call = lambda: hj.glmer(f"z ~ {rhs(5)} + (1 | g)", data, family="binomial")
    first, second = call(), call()
    check_first_then_warm(first.timing, second.timing)
    assert first.objective == second.objective


def gaussian_loglik(params, g, b):
    """A random-intercept Gaussian model written by hand (a program no other test compiles)."""
    r = (g["y"] - params["beta"][0] - params["beta"][1] * g["x1"] - b[0]) / params["scale"]
    return jnp.sum(g["mask"] * (-0.5 * r * r - jnp.log(params["scale"])))


def test_a_user_written_model_reports_timing():
    model = hj.GroupModel(gaussian_loglik, constraints={"scale": "positive", "sd": "positive"}, random="sd")
    data = panel(29, 5, 2)
    call = lambda: hj.fit_group(model, data, "g", {"beta": [0.0, 0.0], "scale": 1.0, "sd": 1.0},
                                columns=["x1", "y"])
    first, second = call(), call()
    check_first_then_warm(first.timing, second.timing)
    assert first.loglik == second.loglik


def test_hlm_reports_timing():
    """The level-equation form: a random intercept and slope whose level-2 equations take a group mean w."""
    data = panel(37, 6, 3)
    data["w"] = data.groupby("g")["x2"].transform("mean")
    call = lambda: hj.hlm(level1="y ~ x1", level2={"(Intercept)": "~ w", "x1": "~ w"}, group="g", data=data)
    first, second = call(), call()
    check_first_then_warm(first.timing, second.timing)
    assert np.array_equal(first.fixef, second.fixef)


def test_lm_reports_timing():
    """OLS runs in numpy: it compiles nothing, so all of its seconds are run time."""
    data = panel(31, 4, 3)
    first, second = hj.lm(f"y ~ {rhs(3)}", data), hj.lm(f"y ~ {rhs(3)}", data)
    for t in (first.timing, second.timing):
        assert t["compile_s"] == 0.0 and t["run_s"] == t["seconds"] > 0
    assert first.coef.equals(second.coef)


def test_lmlist_reports_timing():
    """Per-group OLS compiles its bucket program for 27 groups of 5 rows and 3 coefficients."""
    data = panel(27, 5, 3)
    call = lambda: hj.lmlist(f"y ~ {rhs(3)} | g", data)
    first, second = call(), call()
    check_first_then_warm(first.timing, second.timing)
    assert first.coef.equals(second.coef)


def table_timing(table) -> dict:
    return table.attrs["timing"] if isinstance(table, pd.DataFrame) else table.timing


def test_inference_tables_report_timing(lmer_call):
    model = lmer_call()
    for table in (model.confint, model.ddf_table):
        check_first_then_warm(table_timing(table()), table_timing(table()))
    # a likelihood-ratio test refits by ML with programs compiled already: it reports run time only
    smaller = hj.lmer(f"y ~ {rhs(5)} + (1 | g)", LMER_DATA)
    timing = table_timing(hj.anova(smaller, model))
    assert timing["compile_s"] == 0.0 and timing["run_s"] == timing["seconds"] > 0


@pytest.mark.slow
def test_the_other_tables_report_timing():
    """anova's F table with Satterthwaite df and the variance parameters' table (each compiles for 6-9 s), of
    a model of its own (the tables above compiled the Satterthwaite programs of theirs)."""
    model = hj.lmer(f"y ~ {rhs(7)} + (1 | g)", panel(43, 7, 7))
    for table in (lambda: hj.anova(model, ddf="satterthwaite"), model.variance_table):
        check_first_then_warm(table_timing(table()), table_timing(table()))
