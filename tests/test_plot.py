"""hlm_jax.plot: what each figure draws, checked against lme4 references and independent computations."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from matplotlib.collections import LineCollection, PathCollection  # noqa: E402
from matplotlib.quiver import Quiver  # noqa: E402

import hlm_jax as hj  # noqa: E402
import hlm_jax.plot as hp  # noqa: E402
from conftest import load_reference  # noqa: E402

Z95 = 1.959963984540054


@pytest.fixture(scope="module")
def sleep():
    return hj.lmer("Reaction ~ Days + (Days | Subject)", hj.datasets.load("sleepstudy"))


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def _points(ax):
    """Marker-only Line2D objects (ax.plot(..., 'o'))."""
    return [ln for ln in ax.get_lines() if ln.get_linestyle() in ("None", "none", "")]


def test_caterpillar_intervals_are_lme4_condsd(sleep):
    ref = load_reference("sleepstudy_rs_reml")["ranef"]
    fig = hp.caterpillar(sleep)
    axes = [a for a in fig.axes if a.get_visible()]
    assert len(axes) == 2 and axes[0].get_ylabel() == "Subject"
    order = np.argsort([v for v in next(r for r in ref if r["term"] == "(Intercept)")["values"]], kind="stable")
    for ax, r in zip(axes, ref):
        assert ax.get_title() == r["term"] and "conditional mode" in ax.get_xlabel()
        (segments,) = [c for c in ax.collections if isinstance(c, LineCollection)]
        ends = np.array([[s[0, 0], s[1, 0]] for s in segments.get_segments()])
        assert ends.shape == (18, 2)
        mode, sd = np.asarray(r["values"])[order], np.asarray(r["condsd"])[order]
        np.testing.assert_allclose(ends[:, 0], mode - Z95 * sd, rtol=1e-4, atol=1e-3)
        np.testing.assert_allclose(ends[:, 1], mode + Z95 * sd, rtol=1e-4, atol=1e-3)
        (points,) = _points(ax)
        assert len(points.get_xdata()) == 18
    first = _points(axes[0])[0].get_xdata()
    assert np.all(np.diff(first) >= 0)  # sorted by the intercept's mode


def test_caterpillar_160_groups_labels_a_subset():
    m = hj.lmer("mathach ~ 1 + (1 | school)", hj.datasets.load("hsb"))
    fig = hp.caterpillar(m, max_labels=30)
    (ax,) = fig.axes
    assert len(_points(ax)[0].get_xdata()) == 160
    assert 20 <= len(ax.get_yticklabels()) <= 30


def test_shrinkage_arrows_from_group_ols_to_blups(sleep):
    fig = hp.shrinkage(sleep)
    (ax,) = fig.axes
    blue, blup = [c.get_offsets() for c in ax.collections if isinstance(c, PathCollection)]
    ols = hj.lmlist("Reaction ~ Days | Subject", hj.datasets.load("sleepstudy")).coef
    np.testing.assert_allclose(blue, ols[["(Intercept)", "Days"]].to_numpy(), rtol=1e-8)
    np.testing.assert_allclose(blup, sleep.coef["Subject"][["(Intercept)", "Days"]].to_numpy(), rtol=1e-8)
    (arrows,) = [c for c in ax.collections if isinstance(c, Quiver)]
    assert arrows.N == 18
    np.testing.assert_allclose(np.column_stack([arrows.U, arrows.V]), blup - blue, rtol=1e-8, atol=1e-10)
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("(Intercept)", "Days")
    population = [ln for ln in ax.get_lines() if ln.get_label().startswith("population")]
    np.testing.assert_allclose([population[0].get_xdata()[0], population[0].get_ydata()[0]], sleep.fixef, rtol=1e-10)


def test_shrinkage_against_group_size_has_a_population_line():
    m = hj.lmer("mathach ~ 1 + (1 | school)", hj.datasets.load("hsb"))
    fig = hp.shrinkage(m)
    (ax,) = fig.axes
    sizes, blue = ax.collections[0].get_offsets().T
    hsb = hj.datasets.load("hsb")
    counts = hsb.groupby("school").size()
    np.testing.assert_array_equal(np.sort(sizes), np.sort(counts.to_numpy()))
    np.testing.assert_allclose(np.sort(blue), np.sort(hsb.groupby("school")["mathach"].mean()), rtol=1e-10)
    (line,) = [ln for ln in ax.get_lines() if ln.get_label().startswith("population")]
    assert line.get_ydata()[0] == pytest.approx(m.fixef["(Intercept)"], rel=1e-12)
    assert ax.get_xlabel() == "rows per school"


def test_spaghetti_trellis_and_overlay(sleep):
    fig = hp.spaghetti(sleep, max_groups=6)
    axes = [a for a in fig.axes if a.get_visible()]
    assert len(axes) == 6
    for ax in axes:
        assert len(ax.collections[0].get_offsets()) == 10 and len(ax.get_lines()) == 2
        assert (ax.get_xlabel(), ax.get_ylabel()) == ("Days", "Reaction")
        subject = ax.get_title().split()[-1]
        fitted_line = ax.get_lines()[0]
        coef = sleep.coef["Subject"].loc[subject]
        np.testing.assert_allclose(fitted_line.get_ydata(), coef["(Intercept)"] + coef["Days"] * np.arange(10))
    (ax,) = hp.spaghetti(sleep, kind="overlay").axes
    assert len(ax.get_lines()) == 18 + 1


def test_diagnostics_panels(sleep):
    fig = hp.diagnostics(sleep)
    axes = [a for a in fig.axes if a.get_visible()]
    assert len(axes) == 4
    assert (axes[0].get_xlabel(), axes[0].get_ylabel()) == ("fitted values", "residuals")
    np.testing.assert_allclose(axes[0].collections[0].get_offsets()[:, 1], sleep.residuals().to_numpy())
    qq = _points(axes[1])[0]
    np.testing.assert_allclose(qq.get_ydata(), np.sort(sleep.residuals().to_numpy()))
    assert qq.get_xdata()[0] == pytest.approx(-2.77, abs=0.01)  # qnorm(ppoints(180))[1]
    for ax, col in zip(axes[2:], ["(Intercept)", "Days"]):
        np.testing.assert_allclose(_points(ax)[0].get_ydata(), np.sort(sleep.ranef["Subject"][col]))
        assert ax.get_xlabel() == "theoretical normal quantiles"


def test_profile_zeta_plot_marks_lme4_profile_intervals():
    ref = load_reference("confint_profile_oneway")["dyestuff"]
    m = hj.lmer("Yield ~ 1 + (1 | Batch)", hj.datasets.load("dyestuff"))
    fig = hp.profile(m, levels=(0.8, 0.95))
    axes = [a for a in fig.axes if a.get_visible()]
    assert [a.get_xlabel() for a in axes] == ref["names"]
    for ax, lo, hi in zip(axes, ref["lower"], ref["upper"]):
        (ends,) = [c for c in ax.collections if isinstance(c, LineCollection)]
        segments = ends.get_segments()
        at95 = sorted(s[0, 0] for s in segments if abs(abs(s[1, 1]) - Z95) < 1e-9)
        np.testing.assert_allclose(at95, [lo, hi], rtol=2e-4)
        assert ax.get_ylabel() == "ζ"


def test_bootstrap_histograms_mark_percentile_intervals(sleep):
    b = sleep.bootstrap(n=64, seed=3, progress=False)
    fig = hp.bootstrap(b, which=["(Intercept)", "sigma"])
    axes = [a for a in fig.axes if a.get_visible()]
    intervals = b.confint()
    for ax, name in zip(axes, ["(Intercept)", "sigma"]):
        assert ax.get_xlabel() == name and ax.get_ylabel() == "replicates"
        ends = [ln.get_xdata()[0] for ln in ax.get_lines()]
        np.testing.assert_allclose(ends, intervals.loc[name, ["lower", "upper"]].to_numpy())
        assert sum(p.get_height() for p in ax.patches) == b.converged.sum()
