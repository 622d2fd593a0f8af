"""A first fit sets up JAX's CPU LAPACK from scipy's two Cython LAPACK modules alone, leaving scipy.linalg
unimported (0.25-0.3 s, issue 19), with lme4's numbers; a later `import scipy.linalg` works in full; and when
loading those modules alone fails, the usual import serves."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import load_reference

ROOT = Path(__file__).resolve().parents[1]

FIRST_FIT = """
import json, sys
{prelude}
import hlm_jax as hj
m = hj.lmer("Reaction ~ Days + (Days | Subject)", hj.datasets.load("sleepstudy"))
linalg_loaded = "scipy.linalg" in sys.modules
import scipy.linalg.cython_blas
import scipy.linalg as sla
from scipy.linalg import cython_lapack
later = [sla.cython_blas is scipy.linalg.cython_blas, sla.cython_lapack is cython_lapack,
         "dpotrf" in cython_lapack.__pyx_capi__, float(sla.solve_triangular([[2.0, 0.0], [1.0, 4.0]], [2.0, 9.0],
                                                                             lower=True)[1])]
print(json.dumps({{"linalg_loaded": linalg_loaded, "later": later, "objective": m.objective,
                   "fixef": m.fixef.tolist(), "theta": list(map(float, m.theta))}}))
"""

# importlib.util.find_spec("scipy") raising: the two modules cannot be loaded alone
FAILING = """
import importlib.util
_real = importlib.util.find_spec
def _find_spec(name, *args):
    if name == "scipy":
        raise ImportError("test: scipy's folder not found")
    return _real(name, *args)
importlib.util.find_spec = _find_spec
"""


@pytest.fixture(scope="module")
def cache_home(tmp_path_factory):
    return str(tmp_path_factory.mktemp("cache"))


def _first_fit(cache_home: str, prelude: str = "", **env) -> dict:
    """A fresh interpreter's first sleepstudy fit (cache under cache_home), and what it then imports."""
    env = {k: v for k, v in os.environ.items() if k not in ("HLM_JAX_NO_CACHE", "JAX_COMPILATION_CACHE_DIR")}
    env["XDG_CACHE_HOME"] = cache_home
    out = subprocess.run([sys.executable, "-c", FIRST_FIT.format(prelude=prelude)], cwd=ROOT, env=env,
                         capture_output=True, text=True, check=True).stdout
    return json.loads(out.splitlines()[-1])


def _assert_lme4(result: dict):
    ref = load_reference("sleepstudy_rs_reml")
    assert result["objective"] <= ref["objective"] * (1 + 1e-6)
    np.testing.assert_allclose(result["fixef"], list(ref["fixef"].values()), rtol=1e-5)
    np.testing.assert_allclose(result["theta"], ref["theta"], rtol=1e-3, atol=1e-4)
    assert result["later"] == [True, True, True, 2.0]   # (9 - 1·1) / 4


def test_a_first_fit_leaves_scipy_linalg_unimported_and_a_later_import_works(cache_home):
    """Cold: the fit program is traced, lowered (with LAPACK calls) and compiled; warm: loaded from disk."""
    for _ in ("cold", "warm"):
        result = _first_fit(cache_home)
        assert result["linalg_loaded"] is False
        _assert_lme4(result)
        assert any(Path(cache_home, "hlm_jax", "programs").iterdir())


def test_when_the_modules_cannot_be_loaded_alone_the_usual_import_serves(cache_home):
    result = _first_fit(cache_home, FAILING)
    assert result["linalg_loaded"] is True
    _assert_lme4(result)
