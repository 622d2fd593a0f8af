"""The parametric bootstrap likelihood-ratio test of nested models (pbkrtest's PBmodcomp)."""
from __future__ import annotations

import warnings

import numpy as np

from ..design import DesignError
from ..messages import warn
from ..precision import float64
from ..results import fit_design
from .bootstrap import batch_dims, check_n, model_arrays
from .program import run_simulated
from .results import BatchWarning, PBTest
from .simulate import make_simulator
from .rows import row_simulator, row_statistics, scaled_crossed_target, scaled_row_statistics
from .targets import group_sums, make_target


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
    big_factors = {f.name: f for f in bi.factors}
    for f in si.factors:
        if f.name not in big_factors or not np.array_equal(f.codes, big_factors[f.name].codes):
            raise DesignError(f"pb_test needs the same grouping factor in both models ({f.name!r} is not a "
                              f"grouping factor of the big model: {', '.join(big_factors)})")
    df = big.n_params - small.n_params
    if df <= 0:
        raise DesignError(f"the small model has {small.n_params} parameters and the big one {big.n_params}; "
                          "pass the models as pb_test(small, big)")
    if not _in_span(si.X, bi.X):
        raise DesignError("the models are not nested: the small model's fixed effects are not in the big model's")
    # per factor and level, adding the small model's Z columns to the big model's must not raise the rank
    for f in si.factors:
        Zb = big_factors[f.name].Z
        both = np.column_stack([Zb, f.Z])
        gram = group_sums(np.asarray(f.codes), f.n_levels, both, both)
        if np.any(_rank(gram) > _rank(gram[:, :Zb.shape[1], :Zb.shape[1]])):
            raise DesignError("the models are not nested: the small model's random-effect columns are not in "
                              "the big model's")


def _rank(C: np.ndarray) -> np.ndarray:
    """Numerical rank of each symmetric positive semi-definite matrix in C (G, k, k)."""
    w = np.linalg.eigvalsh(C)
    return np.sum(w > 1e-10 * np.maximum(w[:, -1:], 1e-300), axis=1)


def _sums_problem(small_ml, big_ml, beta_s, beta_b):
    """Simulator of sufficient statistics and the two one-factor targets (the fast path)."""
    X_s, Z_s, codes, G = model_arrays(small_ml)
    X_b, Z_b = big_ml.info.X, big_ml.info.Z
    simulator, _, _ = make_simulator(X_s @ beta_s, Z_s, small_ml.lambda_matrix, small_ml.sigma, codes, G,
                                     [(X_s, Z_s, beta_s), (X_b, Z_b, beta_b)], small_ml.info.row_index)
    return simulator, (make_target(X_s, Z_s, codes, G, small_ml.layout, small_ml.theta, False, small_ml.scales),
                       make_target(X_b, Z_b, codes, G, big_ml.layout, big_ml.theta, False, big_ml.scales))


def _row_statistics(model, beta):
    """The statistics a target of `model` takes: in the data's units for a one-factor target (it scales
    them itself), in the fit's units for a blocked-Cholesky one."""
    return row_statistics(model.design, beta) if len(model.info.factors) == 1 else scaled_row_statistics(model, beta)


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
        m.require_plain("pb_test")
    _check_nested(small, big)
    small_ml, big_ml = _ml(small), _ml(big)
    stat = max(small_ml.objective - big_ml.objective, 0.0)
    df = big.n_params - small.n_params
    beta_s = small_ml.fixef.to_numpy()
    beta_b = np.linalg.lstsq(big_ml.info.X, small_ml.info.X @ beta_s, rcond=None)[0]
    if len(small.info.factors) == len(big.info.factors) == 1:
        simulator, targets = _sums_problem(small_ml, big_ml, beta_s, beta_b)
    else:
        simulator = row_simulator(small_ml, [_row_statistics(small_ml, beta_s), _row_statistics(big_ml, beta_b)])
        targets = tuple(make_target(*model_arrays(m), m.layout, m.theta, False, m.scales) if len(m.info.factors) == 1
                        else scaled_crossed_target(m, m.theta, False) for m in (small_ml, big_ml))
    (out_s, out_b), timing = run_simulated(simulator, targets, n, seed, chunk, progress, max_iter, "pb_test",
                                           batch_dims(small, big))
    out_s = small_ml.scales.unscale_batch(out_s, small.info.nobs, False)
    out_b = big_ml.scales.unscale_batch(out_b, big.info.nobs, False)
    ref = np.maximum(out_s["objective"] - out_b["objective"], 0.0)
    converged = out_s["converged"] & out_b["converged"]
    used = ref[converged]
    positive = used[used > 0]
    p_boot = (1 + np.sum(positive > stat)) / (1 + positive.size)
    # imported here, not with the module: scipy.special (60-75 ms) would otherwise load with hlm_jax.batch on a
    # first bootstrap; not scipy.stats, which costs about a second
    import scipy.special
    p_chisq = float(scipy.special.chdtrc(df, stat))   # the χ² survival function (scipy.stats.chi2.sf)
    n_failed = int(np.sum(~converged))
    if n_failed:
        warn(f"{n_failed} of {n} bootstrap refits did not converge and were left out", BatchWarning)
    return PBTest(float(stat), int(df), p_chisq, float(p_boot), ref, converged, n_failed, timing)
