"""The command line: each output format against the Python API, and each error path (exit 2, one line)."""
from __future__ import annotations

import io
import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

import hlm_jax as hj
from hlm_jax.cli import main

SLEEP = "Reaction ~ Days + (Days | Subject)"


@pytest.fixture(scope="module")
def model():
    return hj.lmer(SLEEP, hj.datasets.load("sleepstudy"))


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_json_round_trips_into_the_api_numbers(capsys, model):
    code, out, err = run(capsys, "fit", SLEEP, "--dataset", "sleepstudy", "--format", "json", "--ddf", "satterthwaite")
    assert code == 0 and "fitted in" in err
    result = json.loads(out)
    fixef = pd.DataFrame(result["fixef"]).set_index("term")
    np.testing.assert_array_equal(fixef["estimate"], model.fixef.to_numpy())  # exact: floats round-trip
    np.testing.assert_array_equal(fixef["std_error"], model.std_errors.to_numpy())
    np.testing.assert_allclose(fixef["df"], model.tidy(ddf="satterthwaite")["df"], rtol=1e-12)
    np.testing.assert_array_equal(result["theta"], model.theta)
    assert result["fit"]["objective"] == model.objective and result["fit"]["sigma"] == model.sigma
    assert result["fit"]["ngroups"] == {"Subject": 18} and result["fit"]["REML"] is True
    varcorr = pd.DataFrame(result["varcorr"])
    np.testing.assert_array_equal(varcorr["vcov"], model.varcorr["vcov"])
    assert varcorr["var2"].isna().sum() == 3  # null in JSON for the variances' second name


def test_csv_rows_and_wald_intervals(capsys, model):
    code, out, _ = run(capsys, "fit", SLEEP, "--dataset", "sleepstudy", "--format", "csv", "--confint", "wald")
    assert code == 0
    table = pd.read_csv(io.StringIO(out))
    assert list(table.columns[:4]) == ["effect", "group", "term", "estimate"]
    fixed = table[table["effect"] == "fixed"].set_index("term")
    np.testing.assert_allclose(fixed["estimate"], model.fixef, rtol=1e-15)
    wald = model.confint(method="wald")
    np.testing.assert_allclose(fixed[["lower", "upper"]], wald.loc[model.fixef.index], rtol=1e-15)
    pars = table[table["effect"] == "ran_pars"]
    assert list(pars["term"]) == ["sd__(Intercept)", "cor__(Intercept).Days", "sd__Days", "sd__Observation"]
    np.testing.assert_allclose(pars["estimate"], model.tidy("ran_pars")["estimate"], rtol=1e-15)
    fit = table[table["effect"] == "fit"].set_index("term")["estimate"]
    assert fit["objective"] == pytest.approx(model.objective, rel=1e-15) and fit["nobs"] == 180


def test_text_with_ddf_and_ranef_file(capsys, tmp_path, model):
    path = tmp_path / "re.csv"
    code, out, err = run(capsys, "fit", SLEEP, "--dataset", "sleepstudy", "--ddf", "kenward-roger", "--ranef", str(path))
    assert code == 0 and "Pr(>|t|)" in out and "Kenward-Roger" in out and "fitted in" in err
    written = pd.read_csv(path, dtype={"level": str})
    expected = model.tidy("ran_vals")
    assert list(written.columns) == list(expected.columns) and len(written) == 36
    np.testing.assert_allclose(written["estimate"], expected["estimate"], rtol=1e-14)


def test_datasets_lists_every_embedded_dataset(capsys):
    code, out, _ = run(capsys, "datasets")
    assert code == 0 and [ln.split()[0] for ln in out.splitlines()] == hj.datasets.names()
    code, out, _ = run(capsys, "datasets", "--format", "json")
    assert [r["name"] for r in json.loads(out)] == hj.datasets.names()


def test_bootstrap_writes_the_replicates(capsys, tmp_path, model):
    path = tmp_path / "reps.csv"
    code, out, err = run(capsys, "bootstrap", SLEEP, "--dataset", "sleepstudy", "--n", "40", "--seed", "7",
                         "--out", str(path), "--no-progress")
    assert code == 0 and "40 bootstrap replicates in" in err and "Percentile intervals" in out
    reps = pd.read_csv(path, index_col="replicate")
    expected = model.bootstrap(n=40, seed=7, progress=False)
    assert len(reps) == 40 and reps["converged"].all()
    np.testing.assert_allclose(reps[expected.replicates.columns], expected.replicates, rtol=1e-12)


@pytest.mark.parametrize("argv,message", [
    (["fit", SLEEP, "--data", "/nonexistent/file.csv"], "no such file"),
    (["fit", SLEEP, "--data", "{binary}"], "cannot read"),
    (["fit", SLEEP, "--data", "{empty}"], "cannot read"),
    (["fit", SLEEP, "--dataset", "nosuchdata"], "unknown dataset 'nosuchdata'"),
    (["fit", "Reaction ~ Dayz + (Days | Subject)", "--dataset", "sleepstudy"], "Dayz"),
    (["fit", "Reaction ~ Days + (Days | Subject", "--dataset", "sleepstudy"], ""),
    (["fit", SLEEP, "--dataset", "sleepstudy", "--format", "xml"], "invalid choice"),
    (["fit", SLEEP], "one of the arguments --dataset --data is required"),
    (["bootstrap", SLEEP, "--dataset", "sleepstudy", "--n", "10"], "--out"),
    (["bootstrap", SLEEP, "--dataset", "sleepstudy", "--n", "0", "--out", "x.csv"], "--n must be at least 1"),
    (["frobnicate"], "invalid choice"),
])
def test_errors_are_one_line_and_exit_2(capsys, tmp_path, argv, message):
    binary, empty = tmp_path / "binary.csv", tmp_path / "empty.csv"
    binary.write_bytes(b"\x00\x01\xff\xfe\x80")
    empty.write_text("")
    argv = [a.format(binary=binary, empty=empty) for a in argv]
    code, out, err = run(capsys, *argv)
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and err.startswith("error: ") and message in err


def test_module_entry_point_has_no_traceback(tmp_path):
    marker = tmp_path / "created"
    formula = f"Reaction ~ I(__import__('os').system('touch {marker}')) + (1 | Subject)"
    for argv in (["fit", SLEEP, "--data", str(tmp_path / "missing.csv")], ["fit", formula, "--dataset", "sleepstudy"]):
        done = subprocess.run([sys.executable, "-m", "hlm_jax", *argv], capture_output=True, text=True, timeout=300)
        assert done.returncode == 2 and "Traceback" not in done.stderr
        assert len(done.stderr.strip().splitlines()) == 1 and done.stderr.startswith("error: ")
    assert not marker.exists()
