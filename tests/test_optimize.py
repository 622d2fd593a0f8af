"""The optimiser's one step (`optimize.newton_step`): a single fit (`minimize`: trials evaluated in order) and the
batched slot queue (`minimize_queue`: trials evaluated in stages across the slots, the step under vmap) take the
same path, step for step, to the same optimum."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import hlm_jax as hj
from hlm_jax.design import build_design
from hlm_jax.fit import crossed_stats, design_stats
from hlm_jax.likelihood import crossed, crossed_newton, lmm
from hlm_jax.model.layout import theta_layout
from hlm_jax.optimize import batch_converged, gradient_and_hessian, minimize, minimize_queue
from hlm_jax.scaling import design_scales, scale_design

CASES = [
    ("sleepstudy", "Reaction ~ Days + (Days | Subject)", 1.0),            # one factor, autodiff derivatives
    ("penicillin", "diameter ~ 1 + (1 | plate) + (1 | sample)", 0.0),     # crossed, trace-identity derivatives
    pytest.param("pastes", "strength ~ 1 + (1 | batch/cask)", 1.0, marks=pytest.mark.slow),   # nested
    pytest.param("sleepstudy", "Reaction ~ Days + (Days | Subject)", 0.0, marks=pytest.mark.slow),
]


def problems(dataset: str, formula: str, n: int):
    """The criterion, its derivatives and n problems (the data's response and n − 1 others) in scaled units."""
    design = build_design(formula, hj.datasets.load(dataset))
    layout = theta_layout(design.info.terms)
    design = scale_design(design, design_scales(design, layout))
    y = design.info.y
    responses = [y] + [y[np.random.default_rng(j).permutation(y.size)] for j in range(1, n)]
    if len(design.info.factors) == 1:
        stats = [design_stats(design, r)[0] for r in responses]
        fun, derivs = lmm.objective, gradient_and_hessian
    else:
        stats = [crossed_stats(design, r)[0] for r in responses]
        fun, derivs = crossed.objective, crossed_newton.newton_derivatives
    return fun, derivs, stats, layout


@pytest.mark.parametrize("dataset, formula, reml", CASES)
def test_slot_queue_takes_the_single_fit_path(dataset, formula, reml):
    """Three problems through two slots (a finished problem's slot is refilled) against three single fits:
    the same number of steps, the same optimum to 1e-10 and the same verdict."""
    fun, derivs, stats, layout = problems(dataset, formula, 3)
    with jax.enable_x64(True):
        x0 = jnp.asarray(layout.start(), float)
        lower = jnp.asarray(layout.lower, float)
        r = jnp.asarray(reml)
        single = jax.jit(lambda s: minimize(fun, x0, lower, (s, r), derivs=derivs))
        singles = [jax.tree_util.tree_map(np.asarray, single(s)) for s in stats]

        def batch_derivs(x, s, r):
            return (fun(x, s, r), *derivs(fun, x, (s, r)))

        data = jax.tree_util.tree_map(lambda *a: jnp.stack(a), *stats)
        queue = jax.jit(lambda d: minimize_queue(fun, batch_derivs, x0, lower, d, lambda b: (b, r), 3, 2))
        batched = jax.tree_util.tree_map(np.asarray, queue(data))
        converged = np.asarray(batch_converged(batched))
    for j, one in enumerate(singles):
        assert one.iterations > 1
        assert batched.iterations[j] == one.iterations
        np.testing.assert_allclose(batched.x[j], one.x, rtol=0, atol=1e-10)
        np.testing.assert_allclose(batched.f[j], one.f, rtol=1e-12)
        assert converged[j] == one.converged
        assert batched.stalled[j] == one.stalled
    assert singles[0].converged
