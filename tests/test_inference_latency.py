"""What keeps a first inference call short in a fresh process: tail probabilities without scipy.stats (the same
values), and the modules a first summary(ddf=...) and anova(m, ddf=...) leave unloaded (issue 19)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
from scipy import stats as sps

from hlm_jax.inference.tails import chi2_sf, f_sf, t_two_sided

ROOT = Path(__file__).resolve().parents[1]


def test_tails_equal_scipy_stats():
    x = np.array([-3.0, -0.5, 0.0, 1e-3, 0.7, 2.5, 40.0, np.inf, np.nan])
    for df in (0.5, 1.0, 3.7, 17.0, 1e6, np.inf):
        np.testing.assert_array_equal(t_two_sided(x, df), 2.0 * sps.t.sf(np.abs(x), df))
    for df in (0.5, 1.0, 3.7, 17.0, 1e6):   # numerator dfs: a count of parameters, df of a t test
        np.testing.assert_array_equal(chi2_sf(x, df), sps.chi2.sf(x, df))
        for dfd in (1.0, 4.2, 150.0):
            np.testing.assert_array_equal(f_sf(x, df, dfd), sps.f.sf(x, df, dfd))


def test_a_first_summary_and_anova_with_ddf_load_no_scipy_stats():
    code = ("import sys, json\nimport hlm_jax as hj\n"
            "m = hj.lmer('Reaction ~ Days + (Days | Subject)', hj.datasets.load('sleepstudy'))\n"
            "m.summary(ddf='Satterthwaite')\nhj.anova(m, ddf='Kenward-Roger')\nprint(json.dumps(sorted(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    loaded = json.loads(out.splitlines()[-1])
    assert "hlm_jax.inference.ftable" in loaded and "scipy.special" in loaded
    assert [m for m in loaded if m.startswith(("scipy.stats", "hlm_jax.ols"))] == []
