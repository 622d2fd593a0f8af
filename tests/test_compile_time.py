"""Compile time reported apart from run time (issue 19), from JAX's own monitoring events."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import pytest

import hlm_jax as hj
from hlm_jax.compile_time import timed


def test_a_new_program_counts_compile_time_and_a_cached_one_none():
    program = jax.jit(lambda x: jnp.cumsum(jnp.sin(x) * 3.0))
    with timed() as first:
        program(jnp.ones(7)).block_until_ready()
    with timed() as again:
        program(jnp.ones(7)).block_until_ready()
    assert 0 < first["compile_s"] <= first["seconds"]
    assert again["compile_s"] == 0.0
    assert again["run_s"] == pytest.approx(again["seconds"])


def test_batched_results_report_compile_and_run_seconds():
    model = hj.lmer("Reaction ~ Days + (Days | Subject)", hj.datasets.load("sleepstudy"))
    boot = model.bootstrap(n=20, seed=1, progress=False)
    again = model.bootstrap(n=20, seed=2, progress=False)
    for timing in (boot.timing, again.timing):
        assert timing["compile_s"] + timing["run_s"] == pytest.approx(timing["seconds"])
    assert again.timing["compile_s"] == 0.0     # the same program, from memory
