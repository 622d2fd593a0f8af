"""Summaries and tidy tables against lmerTest's printed summary and broom.mixed's tidy/glance
(tests/reference/make_summary_references.R)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import hlm_jax as hj
from conftest import load_reference
from hlm_jax.report import abbreviate, coefficient_rows, format_pvalues, format_real, table_text

REF = load_reference("summary_references")
DATA = {"sleepstudy": "sleepstudy", "sleepstudy_ml": "sleepstudy", "hsb": "hsb"}
BROOM = {"std.error": "std_error", "p.value": "p_value", "df.residual": "df_residual"}


@pytest.fixture(scope="module")
def fits():
    out = {}
    for case, data in DATA.items():
        ref = REF[case]
        out[case] = hj.lmer(ref["formula"], hj.datasets.load(data), REML=ref["REML"])
    return out


def block(lines: list[str], title: str) -> list[str]:
    """The lines of one block of a printed summary (from its title to the next blank line), right-stripped."""
    start = next(i for i, ln in enumerate(lines) if ln.rstrip() == title)
    end = next((i for i in range(start + 1, len(lines)) if not lines[i].strip()), len(lines))
    return [ln.rstrip() for ln in lines[start + 1:end]]


def test_abbreviate_is_r_abbreviate():
    names = ["(Intercept)", "cses", "sectorPublic", "meanses", "cses:sectorPublic"]
    assert abbreviate(names, 6) == ["(Intr)", "cses", "sctrPb", "meanss", "css:sP"]
    assert abbreviate(names, 11) == ["(Intercept)", "cses", "sectorPublc", "meanses", "css:sctrPbl"]
    assert abbreviate(["Days", "Days2"], 3) == ["Dys", "Dy2"]  # as R 4.2 gives them
    assert abbreviate(["sexMale:age", "x_long_name_here"], 6) == ["sxMl:g", "x_ln__"]


def test_format_real_as_r():
    assert format_real([2.3808, 0.27158, 36.7077], 4) == [" 2.3808", " 0.2716", "36.7077"]  # hsb's variances
    assert format_real(np.round([-0.0001, -0.766], 3), 3) == [" 0.000", "-0.766"]  # R prints no "-0.000"


def test_format_pvalues_as_r():
    assert format_pvalues([1e-20, 7.306e-14]) == ["< 2e-16", "7.31e-14"]
    assert format_pvalues([0.01234, 0.5]) == ["0.0123", "0.5000"]
    assert format_pvalues([1e-20]) == ["<2e-16"]


@pytest.mark.parametrize("case,ddf,printed", [("sleepstudy", "Satterthwaite", "printed"),
                                              ("sleepstudy", "Kenward-Roger", "printed_kr"),
                                              ("hsb", "Satterthwaite", "printed"),
                                              ("sleepstudy_ml", "Satterthwaite", "printed")])
def test_coefficient_table_prints_as_lmertest(case, ddf, printed):
    """printCoefmat's layout, fed lmerTest's own numbers, gives lmerTest's lines character for character."""
    ref = REF[case]
    key = "satterthwaite" if ddf == "Satterthwaite" else "kenward_roger"
    table = pd.DataFrame(ref[key])
    rows = coefficient_rows(table, stars=True)
    text = table_text(rows, ["l"] + ["r"] * (len(rows[0]) - 1)).splitlines()
    assert text == block(ref[printed], "Fixed effects:")[:len(text)]


@pytest.mark.parametrize("case", ["sleepstudy", "sleepstudy_ml", "hsb"])
@pytest.mark.parametrize("ddf", ["satterthwaite", "kenward-roger"])
def test_ddf_and_p_values_match_lmertest(fits, case, ddf):
    ref = REF[case]
    if ddf == "kenward-roger" and not ref["REML"]:
        pytest.skip("Kenward-Roger needs a REML fit")
    expected = ref["satterthwaite" if ddf == "satterthwaite" else "kenward_roger"]
    got = fits[case].tidy(ddf=ddf)
    assert list(got["term"]) == expected["term"]
    np.testing.assert_allclose(got["df"], expected["df"], rtol=1e-4)
    np.testing.assert_allclose(got["p_value"], expected["p_value"], atol=1e-4)  # to 1e-4, and tiny p
    np.testing.assert_allclose(-np.log10(got["p_value"]), -np.log10(expected["p_value"]), rtol=1e-4)  # closely
    np.testing.assert_allclose(got["std_error"], expected["std_error"], rtol=1e-4)


def test_hsb_summary_blocks_are_lmertest_lines(fits):
    """Scaled residuals, variance components (lme4's digits, one Corr column) and the fixed-effect
    correlations (abbreviated names) print as lmerTest prints them."""
    ref = REF["hsb"]["printed"]
    ours = fits["hsb"].summary(ddf="satterthwaite", stars=True).splitlines()
    for title in ["Scaled residuals:", "Random effects:", "Correlation of Fixed Effects:"]:
        assert block(ours, title) == block(ref, title), title
    assert "REML criterion at convergence: 46514.5" in ours
    fixed = block(ours, "Fixed effects:")
    assert fixed[0].split() == ["Estimate", "Std.", "Error", "df", "t", "value", "Pr(>|t|)"]
    assert fixed[-1] == "Signif. codes:  0 ‘***’ 0.001 ‘**’ 0.01 ‘*’ 0.05 ‘.’ 0.1 ‘ ’ 1"


def test_ml_header_and_integer_df_resid(fits):
    ours = fits["sleepstudy_ml"].summary().splitlines()
    ref = [ln.rstrip() for ln in REF["sleepstudy_ml"]["printed"]]
    i = ref.index("     AIC      BIC   logLik deviance df.resid")
    assert ours[ours.index(ref[i]) + 1] == ref[i + 1]  # "  1763.9   1783.1   -876.0   1751.9      174"
    assert block(ours, "Scaled residuals:") == block(ref, "Scaled residuals:")


def test_no_corr_column_without_correlations():
    m = hj.lmer("Reaction ~ Days + (1 | Subject)", hj.datasets.load("sleepstudy"))
    lines = block(m.summary().splitlines(), "Random effects:")
    assert lines[0].split() == ["Groups", "Name", "Variance", "Std.Dev."]
    assert "Pr(>|t|)" not in m.summary() and "***" not in m.summary(ddf="satterthwaite")


def test_fixed_correlations_left_out_beyond_twelve():
    m = hj.lmer("mathach ~ cses * sector * minrty * sx + (1 | school)", hj.datasets.load("hsb"))
    assert len(m.fixef) == 16
    text = m.summary()
    assert "Correlation matrix not shown by default, as p = 16 > 12." in text
    assert "Correlation of Fixed Effects" not in text
    assert "Correlation of Fixed Effects" in m.summary(correlation=True)


@pytest.mark.parametrize("case", ["sleepstudy", "hsb"])
def test_tidy_matches_broom_mixed(fits, case):
    ref, m = REF[case], fits[case]
    fixed = m.tidy("fixed", ddf="satterthwaite")
    expected = pd.DataFrame(ref["tidy_fixed"]).rename(columns=BROOM)
    assert list(fixed.columns) == list(expected.columns)
    assert (fixed["effect"] == "fixed").all() and list(fixed["term"]) == list(expected["term"])
    np.testing.assert_allclose(fixed[["estimate", "std_error", "statistic", "df"]],
                               expected[["estimate", "std_error", "statistic", "df"]], rtol=1e-4)
    np.testing.assert_allclose(-np.log10(fixed["p_value"]), -np.log10(expected["p_value"]), rtol=1e-4)
    pars = m.tidy("ran_pars")
    expected = pd.DataFrame(ref["tidy_ran_pars"])
    assert list(pars.columns) == list(expected.columns)
    assert pars[["effect", "group", "term"]].values.tolist() == expected[["effect", "group", "term"]].values.tolist()
    np.testing.assert_allclose(pars["estimate"], expected["estimate"], rtol=2e-4)
    vals = m.tidy("ran_vals")
    expected = pd.DataFrame(ref["tidy_ran_vals"]).rename(columns=BROOM)
    assert list(vals.columns) == list(expected.columns)
    merged = vals.merge(expected, on=["effect", "group", "level", "term"], suffixes=("", "_r"))
    assert len(merged) == len(expected) == len(vals)
    scale = np.abs(expected["estimate"]).max()
    np.testing.assert_allclose(merged["estimate"], merged["estimate_r"], atol=2e-4 * scale)
    np.testing.assert_allclose(merged["std_error"], merged["std_error_r"], rtol=2e-4)


@pytest.mark.parametrize("case", ["sleepstudy", "sleepstudy_ml", "hsb"])
def test_glance_matches_broom_mixed(fits, case):
    got = fits[case].glance()
    expected = pd.DataFrame([REF[case]["glance"]]).rename(columns=BROOM)
    assert list(got.columns) == list(expected.columns)
    criteria = [c for c in got.columns if c != "sigma"]
    np.testing.assert_allclose(got[criteria].to_numpy(float), expected[criteria].to_numpy(float), rtol=1e-8)
    np.testing.assert_allclose(got["sigma"], expected["sigma"], rtol=1e-5)  # the likelihood is flat in σ


def test_confint_defaults_to_profile_as_lme4(reference):
    ref = reference("confint_profile_oneway")["dyestuff"]
    m = hj.lmer(ref["formula"], hj.datasets.load("dyestuff"))
    ci = m.confint()
    assert list(ci.index) == ref["names"]
    np.testing.assert_allclose(ci[["lower", "upper"]].to_numpy().T, [ref["lower"], ref["upper"]], rtol=2e-4)


def test_html_reprs(fits):
    m = fits["sleepstudy"]
    text = m._repr_html_()
    assert text.count("<table") == 2 and "Days" in text and "251.4" in text
    small = hj.lmer("Reaction ~ Days + (1 | Subject)", hj.datasets.load("sleepstudy"))
    table = hj.anova(small, m)._repr_html_()
    assert "<table" in table and "Pr(&gt;Chisq)" in table and "refitted with ML" in table
    b = m.bootstrap(n=32, seed=0, progress=False)
    text = b._repr_html_()
    assert "<table" in text and "32 replicates" in text
    summary = b.summary()
    np.testing.assert_allclose(summary["mean"], b.replicates.mean())
