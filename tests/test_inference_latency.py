"""What keeps a first inference call short in a fresh process: tail probabilities without scipy.stats (the same
values), the modules a first summary(ddf=...) and anova(m, ddf=...) leave unloaded, and one Kenward-Roger
program for models of similar sizes (issue 19)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
from scipy import stats as sps

import hlm_jax as hj
from hlm_jax.inference import ddf, kenward_roger
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


def test_kenward_roger_of_a_model_of_similar_size_reuses_the_program():
    """17 and 18 subjects pad to the same block count: the second model's KR df compile nothing, and its df
    equal the dense (unpadded) Z-space path's."""
    d = hj.datasets.load("sleepstudy")
    formula = "Reaction ~ Days + (Days | Subject)"
    kenward_roger(hj.lmer(formula, d))
    m = hj.lmer(formula, d[d.Subject.astype(str) != "308"])
    table = kenward_roger(m)
    assert table.attrs["timing"]["compile_s"] == 0.0
    blocked = ddf.z_space(m)
    G, q, p = blocked.ZtX.shape
    S = np.zeros((G * q, G * q))
    for g in range(G):
        S[q * g:q * g + q, q * g:q * g + q] = blocked.S[g]
    rows, cols = (np.concatenate([q * np.arange(G) + r for r in x]) for x in (blocked.d_rows, blocked.d_cols))
    dense = ddf.ZSpace(S[None], blocked.ZtX.reshape(1, G * q, p), blocked.XtX, blocked.n, rows, cols,
                       np.repeat(blocked.d_param, G))
    pieces = ddf.kenward_roger_pieces(m, zs=dense)
    np.testing.assert_allclose(table["df"], [pieces.df(np.eye(p)[j]) for j in range(p)], rtol=1e-9)
