"""Bad input gets a clear error naming what is wrong; missing rows are dropped and counted."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import hlm_jax as hj


@pytest.fixture
def sleep():
    return hj.datasets.load("sleepstudy")


def test_unknown_column_suggests_close_name(sleep):
    with pytest.raises(hj.DesignError, match=r"column 'Day' is not in the data; did you mean 'Days'"):
        hj.lmer("Reaction ~ Day + (1 | Subject)", sleep)


def test_unknown_grouping_column(sleep):
    with pytest.raises(hj.DesignError, match=r"column 'Subjct' is not in the data; did you mean 'Subject'"):
        hj.lmer("Reaction ~ Days + (1 | Subjct)", sleep)


def test_non_numeric_response(sleep):
    data = sleep.assign(Reaction=sleep["Reaction"].astype(str))
    with pytest.raises(hj.DesignError, match=r"response 'Reaction' must be numeric"):
        hj.lmer("Reaction ~ Days + (1 | Subject)", data)


def test_single_level_grouping_factor(sleep):
    data = sleep.assign(Subject="308")
    with pytest.raises(hj.DesignError, match=r"grouping factor 'Subject' has a single level \('308'\)"):
        hj.lmer("Reaction ~ Days + (1 | Subject)", data)


@pytest.mark.parametrize("formula, message", [
    ("Reaction ~ Days + (Days | Subject", r"unclosed '\('"),
    ("Reaction ~ Days) + (1 | Subject)", r"unmatched '\)'"),
    ("Reaction Days + (1 | Subject)", r"exactly one '~'"),
    ("Reaction ~ Days + ( | Subject)", r"nothing left of '\|'"),
])
def test_formula_syntax_errors_point_at_the_problem(sleep, formula, message):
    with pytest.raises(hj.FormulaError, match=message) as err:
        hj.lmer(formula, sleep)
    assert formula in str(err.value) and "^" in str(err.value)


def test_formula_without_random_term_says_use_ols(sleep):
    with pytest.raises(hj.FormulaError, match=r"no random-effects term.*ordinary least squares"):
        hj.lmer("Reaction ~ Days", sleep)


def test_nested_labels_treated_as_crossed_warn():
    # Pastes: cask labels a, b, c repeat in every batch; (1|batch) + (1|cask) crosses them.
    data = hj.datasets.load("pastes")
    with pytest.warns(UserWarning, match=r"labels of 'cask' repeat across levels of 'batch'.*\(1 \| batch/cask\)"):
        hj.lmer("strength ~ 1 + (1 | batch) + (1 | cask)", data)


def test_aliased_column_dropped_with_warning(sleep):
    data = sleep.assign(Days2=2 * sleep["Days"])
    with pytest.warns(UserWarning, match=r"rank deficient: dropping 1 column\(s\): Days2"):
        m = hj.lmer("Reaction ~ Days + Days2 + (1 | Subject)", data)
    assert list(m.fixef.index) == ["(Intercept)", "Days"]
    ref = hj.lmer("Reaction ~ Days + (1 | Subject)", sleep)
    np.testing.assert_allclose(m.fixef, ref.fixef, rtol=1e-10)
    assert "rank deficient" in m.summary()


def test_missing_values_dropped_and_counted(sleep):
    data = sleep.copy()
    data.loc[[3, 50, 51], "Reaction"] = np.nan
    data.loc[7, "Days"] = np.nan
    before = data.copy()
    with pytest.warns(UserWarning, match=r"4 row\(s\) with missing values"):
        m = hj.lmer("Reaction ~ Days + (Days | Subject)", data)
    assert m.nobs == 176
    assert "(4 observations deleted due to missingness)" in m.summary()
    pd.testing.assert_frame_equal(data, before)  # the caller's data is untouched
    complete = hj.lmer("Reaction ~ Days + (Days | Subject)", data.dropna())
    np.testing.assert_allclose(m.fixef, complete.fixef, rtol=1e-10)


def test_caller_data_not_modified(sleep):
    before = sleep.copy()
    hj.lmer("Reaction ~ Days + (Days || Subject)", sleep)
    pd.testing.assert_frame_equal(sleep, before)


def test_singular_fit_warns():
    with pytest.warns(hj.SingularFitWarning, match="boundary \\(singular\\) fit"):
        m = hj.lmer("Yield ~ 1 + (1 | Batch)", hj.datasets.load("dyestuff2"))
    assert m.singular and m.theta[0] == 0.0


def test_missing_values_in_text_categorical_and_nullable_columns_are_dropped(sleep):
    """Every kind of column counts its missing values: a text grouping factor (None), a Categorical (NaN)
    and a nullable integer (pd.NA) column; the fit equals the one on the complete rows."""
    data = sleep.assign(s=sleep["Subject"].astype(str), c=pd.Categorical(sleep["Subject"]),
                        d=sleep["Days"].astype("Int64"))
    data.loc[2, "s"], data.loc[9, "c"], data.loc[30, "d"] = None, np.nan, pd.NA
    for formula, row in [("Reaction ~ Days + (1 | s)", 2), ("Reaction ~ Days + (1 | c)", 9),
                         ("Reaction ~ d + (1 | Subject)", 30)]:
        with pytest.warns(UserWarning, match=r"1 row\(s\) with missing values"):
            m = hj.lmer(formula, data)
        assert m.nobs == 179 and row not in m.info.row_index
        complete = hj.lmer(formula, data.drop(index=row))
        np.testing.assert_allclose(m.fixef, complete.fixef, rtol=1e-10)


def test_duplicate_column_names_named():
    data = hj.datasets.load("sleepstudy")
    data = pd.concat([data, data[["Days"]]], axis=1)
    with pytest.raises(hj.DesignError, match="column 'Days' appears 2 times"):
        hj.lmer("Reaction ~ Days + (1 | Subject)", data)


def test_design_keeps_its_own_copy_of_the_response(sleep):
    """The design is built from the user's columns without copying the frame; editing the data afterwards
    does not change a fitted model's response or residuals."""
    data = sleep.copy()
    m = hj.lmer("Reaction ~ Days + (1 | Subject)", data)
    y, resid = m.info.y.copy(), np.asarray(m.residuals()).copy()
    data.loc[0, "Reaction"] = 1e6
    np.testing.assert_array_equal(m.info.y, y)
    np.testing.assert_array_equal(np.asarray(m.residuals()), resid)
    assert y[0] == sleep.loc[0, "Reaction"]
