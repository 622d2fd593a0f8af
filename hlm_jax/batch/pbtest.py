"""The parametric bootstrap likelihood-ratio test of nested models (pbkrtest's PBmodcomp)."""
from __future__ import annotations

import warnings

import numpy as np
import scipy.stats

from ..design import DesignError
from ..messages import warn
from ..precision import float64
from ..results import fit_design
from .bootstrap import check_n, model_arrays
from .program import run_simulated
from .results import BatchWarning, PBTest
from .simulate import make_simulator
from .targets import group_sums, make_target, single_factor


def _ml(model):
    """The model refitted by ML when it was fitted by REML (as pbkrtest and anova do)."""
    if not model.reml:
        return model
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fit_design(model.design, REML=False)


def _in_span(A: np.ndarray, B: np.ndarray, tol: float = 1e-8) -> bool:
    """Whether every column of A lies in the column space of B."""
    if A.shape[1] == 0:
        return True
    coef = np.linalg.lstsq(B, A, rcond=None)[0]
    resid = A - B @ coef
    return bool(np.all(np.linalg.norm(resid, axis=0) <= tol * np.maximum(np.linalg.norm(A, axis=0), 1.0)))


def _check_nested(small, big) -> None:
    si, bi = small.info, big.info
    if si.nobs != bi.nobs or not np.array_equal(si.y, bi.y) or not si.row_index.equals(bi.row_index):
        raise DesignError("pb_test needs both models fitted to the same data and response "
                          f"({si.nobs} vs {bi.nobs} rows used)")
    if si.factor != bi.factor or not np.array_equal(si.group_codes, bi.group_codes):
        raise DesignError(f"pb_test needs the same grouping factor in both models ({si.factor!r} vs {bi.factor!r})")
    df = big.n_params - small.n_params
    if df <= 0:
        raise DesignError(f"the small model has {small.n_params} parameters and the big one {big.n_params}; "
                          "pass the models as pb_test(small, big)")
    if not _in_span(si.X, bi.X):
        raise DesignError("the models are not nested: the small model's fixed effects are not in the big model's")
    # per group, adding the small model's Z columns to the big model's must not raise the rank
    qb = bi.Z.shape[1]
    codes = np.asarray(si.group_codes)
    gram = group_sums(codes, si.n_groups, np.column_stack([bi.Z, si.Z]), np.column_stack([bi.Z, si.Z]))

    def rank(C):
        w = np.linalg.eigvalsh(C)
        return np.sum(w > 1e-10 * np.maximum(w[:, -1:], 1e-300), axis=1)

    if np.any(rank(gram) > rank(gram[:, :qb, :qb])):
        raise DesignError("the models are not nested: the small model's random-effect columns are not in "
                          "the big model's")


@float64
def pb_test(small, big, n: int = 1000, seed: int = 0, chunk: int | None = None,
            progress: bool | None = None, max_iter: int = 200) -> PBTest:
    """Parametric bootstrap likelihood-ratio test of nested models (pbkrtest's PBmodcomp).

    Both models are refitted by ML when fitted by REML; n responses are simulated from the small
    model's ML fit and both models refitted to each in one batched program. The statistic is
    2 (logLik_big − logLik_small); the χ² p-value uses df = the difference in parameter counts.
    GLMMs (hj.glmer) are refitted by their own batched Laplace program.
    """
    if getattr(small, "family", None) is not None:
        return small.pb_test(big, n=n, seed=seed, max_iter=max_iter)
    n = check_n(n)
    for m, role in ((small, "small"), (big, "big")):
        if not hasattr(m, "info") or not hasattr(m, "fixef"):
            raise TypeError(f"pb_test needs fitted models (hj.lmer); the {role} model is {type(m).__name__}")
        single_factor(m, "pb_test")
        m.require_plain("pb_test")
    _check_nested(small, big)
    small_ml, big_ml = _ml(small), _ml(big)
    stat = max(small_ml.objective - big_ml.objective, 0.0)
    df = big.n_params - small.n_params
    X_s, Z_s, codes, G = model_arrays(small_ml)
    X_b, Z_b = big_ml.info.X, big_ml.info.Z
    beta_s = small_ml.fixef.to_numpy()
    mean = X_s @ beta_s
    beta_b = np.linalg.lstsq(X_b, mean, rcond=None)[0]
    simulator, _, _ = make_simulator(mean, Z_s, small_ml.lambda_matrix, small_ml.sigma, codes, G,
                                 [(X_s, Z_s, beta_s), (X_b, Z_b, beta_b)], small.info.row_index)
    targets = (make_target(X_s, Z_s, codes, G, small_ml.layout, small_ml.theta, False, small_ml.scales),
               make_target(X_b, Z_b, codes, G, big_ml.layout, big_ml.theta, False, big_ml.scales))
    dims = (G, max(small.info.q, big.info.q), big.info.p)
    (out_s, out_b), timing = run_simulated(simulator, targets, n, seed, chunk, progress, max_iter, "pb_test", dims)
    out_s = small_ml.scales.unscale_batch(out_s, small.info.nobs, False)
    out_b = big_ml.scales.unscale_batch(out_b, big.info.nobs, False)
    ref = np.maximum(out_s["objective"] - out_b["objective"], 0.0)
    converged = out_s["converged"] & out_b["converged"]
    used = ref[converged]
    positive = used[used > 0]
    p_boot = (1 + np.sum(positive > stat)) / (1 + positive.size)
    p_chisq = float(scipy.stats.chi2.sf(stat, df))
    n_failed = int(np.sum(~converged))
    if n_failed:
        warn(f"{n_failed} of {n} bootstrap refits did not converge and were left out", BatchWarning)
    return PBTest(float(stat), int(df), p_chisq, float(p_boot), ref, converged, n_failed, timing)
