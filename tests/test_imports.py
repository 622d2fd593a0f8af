"""`import hlm_jax` loads only what a first `lmer` fit needs; every public name still resolves (issue 19)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import hlm_jax as hj

ROOT = Path(__file__).resolve().parents[1]

# rooms a first lmer fit does not use: they load on first access of one of their names
LATER = ("hlm_jax.batch", "hlm_jax.inference", "hlm_jax.multilevel", "hlm_jax.plot", "hlm_jax.glmm",
         "hlm_jax.glmm_results", "hlm_jax.model.family", "hlm_jax.model.user", "hlm_jax.user_fit", "hlm_jax.ols",
         "hlm_jax.model.residual", "hlm_jax.residual_fit",
         "hlm_jax.cli", "scipy.stats", "scipy.sparse", "scipy.linalg", "matplotlib")


def _modules_after(code: str) -> list[str]:
    """The modules loaded in a fresh interpreter after running `code`."""
    out = subprocess.run([sys.executable, "-c", f"{code}\nimport sys, json; print(json.dumps(sorted(sys.modules)))"],
                         cwd=ROOT, capture_output=True, text=True, check=True).stdout
    return json.loads(out.splitlines()[-1])


def test_import_and_a_first_fit_leave_the_later_rooms_unloaded():
    loaded = _modules_after('import hlm_jax as hj\nhj.lmer("Reaction ~ Days + (Days | Subject)", '
                            'hj.datasets.load("sleepstudy"))')
    assert "hlm_jax.results" in loaded
    assert [m for m in loaded if m.startswith(LATER)] == []


def test_a_first_profile_confint_loads_no_scipy_stats_optimize_or_special_and_no_batch():
    loaded = _modules_after('import hlm_jax as hj\nhj.lmer("Reaction ~ Days + (1 | Subject)", '
                            'hj.datasets.load("sleepstudy")).confint(which=["sigma"], progress=False)')
    assert "hlm_jax.inference.profile" in loaded
    unused = ("scipy.stats", "scipy.optimize", "scipy.special", "hlm_jax.ols", "hlm_jax.batch")
    assert [m for m in loaded if m.startswith(unused)] == []


def test_every_public_name_resolves_and_is_listed():
    for name in hj.__all__:
        assert getattr(hj, name) is not None, name
        assert name in dir(hj), name
    assert hj.families.Binomial(link="probit").link.name == "probit"
    assert hj.GroupModel.__module__ == "hlm_jax.model.user"
    assert hj.bootstrap.__module__.startswith("hlm_jax.batch")


def _freeze_count(env: dict) -> int:
    """gc.get_freeze_count() in a fresh interpreter right after `import hlm_jax`."""
    code = "import gc, hlm_jax; print(gc.get_freeze_count())"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True, env=env)
    return int(out.stdout.split()[-1])


def test_import_freezes_the_imported_objects_unless_told_not_to():
    base = {k: v for k, v in os.environ.items() if k != "HLM_JAX_NO_GC_FREEZE"}
    assert _freeze_count(base) > 50_000          # JAX's, pandas' and hlm_jax's module objects
    assert _freeze_count(base | {"HLM_JAX_NO_GC_FREEZE": "1"}) == 0


def test_a_first_single_factor_fit_skips_the_blas_scan_that_crossed_fits_take():
    code = ("import json, threadpoolctl\nscans = []\ninit = threadpoolctl.ThreadpoolController.__init__\n"
            "def counting(self, *a, **k):\n    scans.append(1)\n    init(self, *a, **k)\n"
            "threadpoolctl.ThreadpoolController.__init__ = counting\nimport hlm_jax as hj\n"
            "hj.lmer('Reaction ~ Days + (Days | Subject)', hj.datasets.load('sleepstudy'))\nfirst = len(scans)\n"
            "hj.lmer('diameter ~ 1 + (1 | plate) + (1 | sample)', hj.datasets.load('penicillin'))\n"
            "print(json.dumps([first, len(scans)]))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert json.loads(out.splitlines()[-1]) == [0, 1]   # the crossed fit's factorisations run on one BLAS thread
