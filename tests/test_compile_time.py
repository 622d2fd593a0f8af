"""Compile time reported apart from run time (issue 19), from JAX's own monitoring events; compiled programs
kept on disk and loaded by a fresh process."""
from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import hlm_jax as hj
from hlm_jax.compile_time import ONCE, UPGRADE_CALLS, Program, timed


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


SALT = float(np.random.default_rng().integers(1, 2 ** 40))   # a new program each session: JAX's cache lacks it


def _program(name="test_program"):
    """A small program with a LAPACK call (a loaded executable needs LAPACK set up) and a static argument."""
    def solve(a, b, power: int):
        return (jnp.linalg.solve(a @ a.T + jnp.eye(a.shape[0]), b) + SALT) ** power
    return Program(solve, name, static_argnames=("power",))


def _events_during(fn):
    """JAX's compile events (names) while fn runs, and its result."""
    seen = []
    listener = lambda event, seconds, **_: seen.append(event)
    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        with jax.enable_x64(True):
            out = jax.block_until_ready(fn())
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)
    return seen, out


def test_a_program_kept_on_disk_is_loaded_without_tracing_and_gives_the_same_numbers(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.delenv("HLM_JAX_NO_CACHE", raising=False)
    a = np.arange(12.0).reshape(4, 3) / 7
    b = np.linspace(-1, 2, 4)
    expected = (np.linalg.solve(a @ a.T + np.eye(4), b) + SALT) ** 3
    events, first = _events_during(lambda: _program()(a, b, power=3))
    assert "/jax/core/compile/jaxpr_trace_duration" in events
    assert len(list((tmp_path / "hlm_jax" / "programs").glob("test_program-*"))) == 1
    fresh = _program()   # as in a new process: nothing in memory
    with timed() as t:
        events, again = _events_during(lambda: fresh(a, b, power=3))
    assert events == []   # no tracing, lowering or compiling
    assert t["compile_s"] > 0   # the load is reported as compile time
    np.testing.assert_allclose(first, expected, rtol=1e-12)
    np.testing.assert_array_equal(again, first)
    events, other = _events_during(lambda: fresh(a, b, power=2))   # another static value: another program
    assert "/jax/core/compile/jaxpr_trace_duration" in events
    np.testing.assert_allclose(other, expected ** (2 / 3), rtol=1e-12)


def test_a_program_loaded_from_jaxs_own_cache_is_not_kept_again(tmp_path, monkeypatch):
    """XLA re-serializes an executable that JAX loaded from its persistent cache without its kernels; and a
    program hlm_jax keeps is not also written to JAX's cache."""
    if not jax.config.jax_compilation_cache_dir:
        pytest.skip("JAX's persistent compilation cache is off")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.delenv("HLM_JAX_NO_CACHE", raising=False)
    jax_cache = Path(jax.config.jax_compilation_cache_dir)
    before = set(jax_cache.iterdir()) if jax_cache.exists() else set()
    _events_during(lambda: _program("kept")(np.eye(4), np.ones(4), power=1))
    assert len(list((tmp_path / "hlm_jax" / "programs").glob("kept-*"))) == 1
    assert not [p for p in set(jax_cache.iterdir()) - before if "solve" in p.name]
    plain = _program("twice").jit   # plain jit: JAX compiles and writes its own cache entry
    _events_during(lambda: plain(np.eye(2), np.ones(2), power=1))
    out = _events_during(lambda: _program("twice")(np.eye(2), np.ones(2), power=1))[1]
    np.testing.assert_allclose(out, np.full(2, 0.5 + SALT), rtol=1e-12)
    assert not list((tmp_path / "hlm_jax" / "programs").glob("twice-*"))


def test_a_damaged_kept_program_is_compiled_again(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.delenv("HLM_JAX_NO_CACHE", raising=False)
    a, b = np.eye(3), np.ones(3)
    _events_during(lambda: _program("damaged")(a, b, power=1))
    for path in (tmp_path / "hlm_jax" / "programs").glob("damaged-*"):
        path.write_bytes(b"not a program")
    assert _events_during(lambda: _program("damaged")(a, b, power=1))[1] == pytest.approx(np.full(3, 0.5 + SALT), rel=1e-12)


def test_no_program_is_kept_with_hlm_jax_no_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setenv("HLM_JAX_NO_CACHE", "1")
    out = _events_during(lambda: _program("uncached")(np.eye(2), np.ones(2), power=1))[1]
    assert out == pytest.approx(np.full(2, 0.5 + SALT), rel=1e-12)
    assert not (tmp_path / "hlm_jax").exists()


def test_a_quick_compile_serves_the_first_calls_and_the_optimised_one_the_rest(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.delenv("HLM_JAX_NO_CACHE", raising=False)
    program = _program("tiers")
    program.quick_options = ONCE
    a, b = np.eye(5) * 2, np.arange(5.0)   # shapes no other test compiles (JAX's cache would serve them)
    outs = [_events_during(lambda: program(a, b, power=1))]
    other = _program("tiers")   # another process, started while only the quick program was kept
    other.quick_options = ONCE
    assert _events_during(lambda: other(a, b, power=1))[0] == []
    outs += [_events_during(lambda: program(a, b, power=1)) for _ in range(UPGRADE_CALLS)]
    compiles = [events.count("/jax/core/compile/backend_compile_duration") for events, _ in outs]
    assert compiles == [1] + [0] * (UPGRADE_CALLS - 2) + [1, 0]   # quick, then optimised on the last quick call
    for _, out in outs:
        np.testing.assert_allclose(out, b / 5 + SALT, rtol=1e-12)
    kept = sorted(p.name.split("-")[0] for p in (tmp_path / "hlm_jax" / "programs").iterdir())
    assert kept == ["tiers", "tiers.quick"]
    fresh = _program("tiers")
    fresh.quick_options = ONCE
    assert _events_during(lambda: fresh(a, b, power=1))[0] == []   # a new process loads the optimised one
    upgrades = [_events_during(lambda: other(a, b, power=1))[0] for _ in range(UPGRADE_CALLS - 1)]
    assert upgrades == [[]] * (UPGRADE_CALLS - 1)   # the other process's upgrade finds it on disk too


def test_a_model_of_the_same_shape_with_other_names_reuses_the_compiled_fit(sleepstudy, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))   # nothing kept on disk: only this process's programs
    formula = "Reaction ~ Days + (Days | Subject)"
    first = hj.lmer(formula, sleepstudy)
    renamed = sleepstudy.rename(columns={"Reaction": "y", "Days": "x", "Subject": "g"})
    fewer = renamed[renamed["g"] != renamed["g"].iloc[0]]   # 17 groups: the same 32 group slots as 18
    events, again = _events_during(lambda: hj.lmer("y ~ x + (x | g)", renamed))
    assert "/jax/core/compile/jaxpr_trace_duration" not in events
    assert again.objective == pytest.approx(first.objective, rel=1e-12)
    assert list(again.fixef.index) == ["(Intercept)", "x"]
    events, subset = _events_during(lambda: hj.lmer("y ~ x + (x | g)", fewer))
    assert "/jax/core/compile/jaxpr_trace_duration" not in events
    assert subset.ngroups["g"] == 17


def test_a_program_called_inside_a_traced_function_is_traced_with_it():
    program = _program("inside")
    a, b = np.eye(2) * 3, np.array([1.0, 2.0])
    direct = _events_during(lambda: program(a, b, power=1))[1]
    traced = _events_during(lambda: jax.jit(lambda b: program(a, b, power=1))(b))[1]
    np.testing.assert_allclose(traced, direct, rtol=1e-12)
    np.testing.assert_allclose(direct, b / 10 + SALT, rtol=1e-12)


def test_a_kept_program_that_others_could_write_is_not_loaded(tmp_path, monkeypatch):
    """A kept program is unpickled: a file (or folder) writable by other users is compiled afresh instead."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.delenv("HLM_JAX_NO_CACHE", raising=False)
    a, b = np.eye(3), np.ones(3)
    _events_during(lambda: _program("shared")(a, b, power=1))
    folder = tmp_path / "hlm_jax" / "programs"
    assert folder.stat().st_mode & 0o077 == 0   # created private
    (kept,) = folder.glob("shared-*")
    kept.chmod(0o666)
    events, out = _events_during(lambda: _program("shared")(a, b, power=1))
    assert "/jax/core/compile/jaxpr_trace_duration" in events   # not loaded: traced and compiled again
    assert out == pytest.approx(np.full(3, 0.5 + SALT), rel=1e-12)
