"""Property-based tests (hypothesis) over reference models: what must not change the answer.

* Units: scaling each covariate by c and the response by k is a reparametrisation. The REML criterion
  shifts by exactly 2 (n − p) log k + 2 Σ log c (the X columns scaled), β_j scales by k / c_j, each random
  effect's sd by k / c, σ by k, and correlations stay.
* Row order, level labels and level order.
* `(x || g)` is `(1 | g) + (0 + x | g)`.

Each model's base fit is checked against lme4 once; the drawn data sets keep the base fit's shapes, so
every fit after the first reuses its compiled program.
"""
from __future__ import annotations

import warnings
from functools import lru_cache

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import hlm_jax as hj
from conftest import load_reference

# name: (dataset, formula, covariates that may be scaled, response, lme4 reference or None)
MODELS = {
    "sleepstudy": ("sleepstudy", "Reaction ~ Days + (Days | Subject)", ("Days",), "Reaction", "sleepstudy_rs_reml"),
    "dyestuff": ("dyestuff", "Yield ~ 1 + (1 | Batch)", (), "Yield", "dyestuff_reml"),
    "penicillin": ("penicillin", "diameter ~ 1 + (1 | plate) + (1 | sample)", (), "diameter", "penicillin_reml"),
    "hsb": ("hsb", "mathach ~ ses + (ses | school)", ("ses",), "mathach", None),
}
SETTINGS = settings(max_examples=6, deadline=None, derandomize=True)
log10_factor = st.floats(min_value=-6.0, max_value=6.0, allow_nan=False)


@lru_cache(maxsize=None)
def data(name: str) -> pd.DataFrame:
    dataset = MODELS[name][0]
    frame = hj.datasets.load(dataset)
    if dataset == "hsb":   # a subset: the first 30 schools
        frame = frame[frame.school.isin(frame.school.unique()[:30])].reset_index(drop=True)
    return frame


def fit(name: str, frame: pd.DataFrame, formula: str | None = None):
    with warnings.catch_warnings():
        warnings.simplefilter("error", hj.ConvergenceWarning)
        return hj.lmer(formula or MODELS[name][1], frame)


@lru_cache(maxsize=None)
def base(name: str):
    m = fit(name, data(name))
    ref = MODELS[name][4]
    if ref is not None:
        assert m.objective == pytest.approx(load_reference(ref)["objective"], abs=1e-6)
    return m


def sd_rows(m) -> pd.Series:
    """σ and the random effects' sds and correlations, keyed by (group, var1, var2)."""
    vc = m.varcorr
    return pd.Series(vc["sdcor"].to_numpy(), index=pd.MultiIndex.from_frame(vc[["grp", "var1", "var2"]].fillna("")))


def assert_same_fit(a, b, objective_shift: float = 0.0, rtol: float = 1e-6):
    assert a.converged and b.converged
    assert b.objective == pytest.approx(a.objective + objective_shift, rel=1e-7)
    np.testing.assert_allclose(b.fixef.to_numpy(), a.fixef.to_numpy(), rtol=rtol, atol=1e-9 * a.fixef.abs().max())
    pd.testing.assert_series_equal(sd_rows(b), sd_rows(a), rtol=rtol, atol=1e-8 * a.sigma)


@pytest.mark.parametrize("name", list(MODELS))
@SETTINGS
@given(log_c=st.lists(log10_factor, min_size=2, max_size=2), log_k=log10_factor)
def test_scaling_covariates_and_response_transforms_the_fit_exactly(name, log_c, log_k):
    _, _, covariates, response, _ = MODELS[name]
    m0 = base(name)
    c = dict(zip(covariates, 10.0 ** np.asarray(log_c)))
    k = 10.0 ** log_k
    frame = data(name).assign(**{v: data(name)[v] * f for v, f in c.items()}, **{response: data(name)[response] * k})
    m = fit(name, frame)
    n, p = m0.nobs, len(m0.fixef)
    assert m.converged
    assert m.objective == pytest.approx(m0.objective + 2 * (n - p) * np.log(k) + 2 * sum(np.log(f) for f in c.values()),
                                        rel=1e-7)
    np.testing.assert_allclose(m.fixef.to_numpy(), m0.fixef.to_numpy() * k / np.array([c.get(t, 1.0) for t in m0.fixef.index]),
                               rtol=1e-6)
    expected = [s * (k / c.get(v1, 1.0) if v2 == "" else 1.0) if g != "Residual" else s * k
                for (g, v1, v2), s in sd_rows(m0).items()]
    np.testing.assert_allclose(sd_rows(m).to_numpy(), expected, rtol=1e-6)


@pytest.mark.parametrize("name", list(MODELS))
@SETTINGS
@given(seed=st.integers(0, 2 ** 32 - 1))
def test_row_order_does_not_change_the_fit(name, seed):
    frame = data(name)
    permuted = frame.iloc[np.random.default_rng(seed).permutation(len(frame))]
    m0, m = base(name), fit(name, permuted)
    assert_same_fit(m0, m)
    for factor, modes in m0.ranef.items():
        pd.testing.assert_frame_equal(m.ranef[factor], modes, rtol=1e-6, atol=1e-8 * m0.sigma)


@pytest.mark.parametrize("name", list(MODELS))
@SETTINGS
@given(seed=st.integers(0, 2 ** 32 - 1), categorical=st.booleans())
def test_relabelled_and_reordered_levels_do_not_change_the_fit(name, seed, categorical):
    """Each grouping factor's levels get new names (in another sort order), or a Categorical whose
    categories are in a shuffled order; the modes follow their levels."""
    rng = np.random.default_rng(seed)
    frame = data(name).copy()
    m0 = base(name)
    renames = {}
    for f in m0.info.factors:
        col = f.group[0]
        old = np.asarray(m0.ranef[f.name].index)
        new = [f"L{i}" for i in rng.permutation(len(old))]
        renames[f.name] = dict(zip(old, new))
        values = frame[col].astype(str).map(renames[f.name])
        frame[col] = pd.Categorical(values, categories=list(rng.permutation(new))) if categorical else values
    m = fit(name, frame)
    assert_same_fit(m0, m)
    for factor, modes in m0.ranef.items():
        relabelled = m.ranef[factor].loc[[renames[factor][lvl] for lvl in modes.index]]
        np.testing.assert_allclose(relabelled.to_numpy(), modes.to_numpy(), rtol=1e-6, atol=1e-8 * m0.sigma)


@SETTINGS
@given(log_c=log10_factor)
def test_double_bar_is_independent_terms_on_one_factor(log_c):
    """`(Days || Subject)` and `(1 | Subject) + (0 + Days | Subject)` are one model, in any units of Days."""
    frame = data("sleepstudy").assign(Days=data("sleepstudy").Days * 10.0 ** log_c)
    a = fit("sleepstudy", frame, "Reaction ~ Days + (Days || Subject)")
    b = fit("sleepstudy", frame, "Reaction ~ Days + (1 | Subject) + (0 + Days | Subject)")
    assert_same_fit(a, b)
    np.testing.assert_allclose(b.theta, a.theta, rtol=1e-6)
    assert a.objective == pytest.approx(load_reference("sleepstudy_uncorr_reml")["objective"] + 2 * log_c * np.log(10),
                                        rel=1e-7)
