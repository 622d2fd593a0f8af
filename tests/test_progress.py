"""Progress bars: on, off, off by environment, the text bar in Jupyter without ipywidgets."""
from __future__ import annotations

import hlm_jax as hj
from hlm_jax import progress
from hlm_jax.inference.profile import profile_intervals
from tqdm import std


def test_switches(monkeypatch):
    assert progress.bar(5, show=False).disable
    assert not progress.bar(5, show=True).disable
    monkeypatch.setenv("HLM_JAX_PROGRESS", "0")
    assert progress.bar(5).disable and not progress.bar(5, show=True).disable


def test_text_bar_without_ipywidgets(monkeypatch):
    monkeypatch.setattr(progress.importlib.util, "find_spec", lambda name: None)
    assert progress.tqdm_class() is std.tqdm


def test_bootstrap_and_profile_bars(capsys):
    sleep = hj.lmer("Reaction ~ Days + (Days | Subject)", hj.datasets.load("sleepstudy"))
    sleep.bootstrap(n=64, seed=3, progress=True)  # the program test_plot's bootstrap compiles
    assert "bootstrap" in capsys.readouterr().err
    sleep.bootstrap(n=64, seed=3, progress=False)
    assert capsys.readouterr().err == ""
    m = hj.lmer("Yield ~ 1 + (1 | Batch)", hj.datasets.load("dyestuff"))
    profile_intervals(m, which=["(Intercept)"], progress=True)
    assert "profile" in capsys.readouterr().err
