"""The formula parser: R's model matrices (names and values), lme4 fits with transforms and backticked
names, lme4's formula forms, and the parser's refusals."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import hlm_jax as hj
from conftest import load_reference
from hlm_jax.formula import model_matrix, parse_formula, parse_terms

REF = load_reference("formula_matrices")
DATA = pd.DataFrame(REF["data"])


@pytest.mark.parametrize("case", REF["matrices"], ids=[m["rhs"] for m in REF["matrices"]])
def test_model_matrix_matches_r(case):
    """Column names and values equal R's model.matrix: contrasts, indicator coding without an intercept
    or a marginal term, interaction order, poly/scale/factor, backticked and non-ASCII names."""
    X, spec = model_matrix(parse_terms(case["rhs"].lstrip("~ "), "formula"), DATA)
    assert list(spec.names) == list(np.atleast_1d(case["names"]))
    np.testing.assert_allclose(X, np.array(case["X"], dtype=float).reshape(X.shape), rtol=1e-10, atol=1e-12)


def test_matrix_on_new_data_reuses_the_fit_coding():
    """poly and scale keep the fitting data's coefficients; factors keep its levels (R's predict)."""
    terms = parse_terms("poly(x, 2) + scale(z) + f", "formula")
    X, spec = model_matrix(terms, DATA)
    np.testing.assert_allclose(spec.matrix(DATA.iloc[::-1]), X[::-1], rtol=1e-12)
    with pytest.raises(hj.DesignError, match=r"f has level 'top', which is not among its levels \(hi, lo, mid\)"):
        spec.matrix(DATA.assign(f="top"))


def test_fit_with_factor_transform_and_backticks_matches_lme4():
    fit = REF["fit"]
    with pytest.warns(hj.SingularFitWarning):  # lme4's third θ is 2e-4: the optimum is at the boundary
        m = hj.lmer(fit["formula"], DATA)
    assert list(m.fixef.index) == list(fit["fixef"])
    np.testing.assert_allclose(m.fixef, list(fit["fixef"].values()), rtol=1e-4, atol=1e-6)
    assert m.objective <= fit["objective"] * (1 + 1e-8)


def test_factor_and_unparenthesised_bar(sleep):
    m = hj.lmer("Reaction ~ factor(Days) + (1 | Subject)", sleep)
    assert list(m.fixef.index) == ["(Intercept)"] + [f"factor(Days){d}" for d in range(1, 10)]
    np.testing.assert_allclose(m.fixef["factor(Days)9"],
                               sleep.query("Days == 9").Reaction.mean() - sleep.query("Days == 0").Reaction.mean(),
                               rtol=1e-8)
    bare = hj.lmer("Reaction ~ 1 | Subject", sleep)
    ref = hj.lmer("Reaction ~ 1 + (1 | Subject)", sleep)
    assert bare.objective == pytest.approx(ref.objective, rel=1e-12)


def test_columns_named_like_transforms(sleep):
    data = sleep.rename(columns={"Days": "log", "Subject": "C"}).assign(scale=sleep["Days"] ** 2)
    m = hj.lmer("Reaction ~ log + scale + log(log + 1) + (1 | C)", data)
    assert list(m.fixef.index) == ["(Intercept)", "log", "scale", "log(log + 1)"]


@pytest.fixture
def sleep():
    return hj.datasets.load("sleepstudy")


@pytest.mark.parametrize("formula, parts", [
    ("y ~ a*b + (1 | g/h)", (["1", "a", "b", "a:b"], [("g",), ("h", "g")])),
    ("y ~ 0 + x + (x || g)", (["x"], [("g",)])),
    ("log(y) ~ poly(x, 2) - 1 + (1 | `my group`)", (["poly(x, 2)"], [("my group",)])),
    ("y ~ (a + b + c)^2 - a:b + (1 | g:h)", (["1", "a", "b", "c", "a:c", "b:c"], [("g", "h")])),
])
def test_lme4_forms(formula, parts):
    parsed = parse_formula(formula)
    assert parsed.fixed_terms.labels == parts[0]
    assert [t.group for t in parsed.random] == parts[1]


def test_parsed_formulas_are_kept_by_text_and_errors_raise_every_time():
    """A formula's parse is kept (the same immutable object for the same text, another for another text or
    `require_random`), and a formula that fails raises on every call, not only the first."""
    a = parse_formula("Reaction ~ Days + (Days | Subject)")
    assert parse_formula("Reaction ~ Days + (Days | Subject)") is a
    assert parse_formula("Reaction ~ Days + (Days || Subject)") is not a
    assert parse_formula("y ~ x", require_random=False).random == ()
    for _ in range(2):
        with pytest.raises(hj.FormulaError, match="no random-effects term"):
            parse_formula("y ~ x")
        with pytest.raises(hj.FormulaError, match="__import__"):
            parse_formula("y ~ __import__('os') + (1 | g)")
    with pytest.raises(hj.FormulaError, match="formula must be a string"):
        parse_formula(["y ~ x + (1 | g)"])
