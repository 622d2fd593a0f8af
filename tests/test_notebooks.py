"""The notebooks: saved with their outputs, and each re-executed at reduced size (HLM_JAX_QUICK=1)."""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
spec = importlib.util.spec_from_file_location("execute", ROOT / "notebooks" / "execute.py")
execute = importlib.util.module_from_spec(spec)
spec.loader.exec_module(execute)


def test_every_notebook_is_saved_executed():
    """Every code cell ran (in order) and none saved an error, so they read well on a code host."""
    assert {p.stem for p in NOTEBOOKS} >= {"01_high_school_and_beyond", "02_london_schools", "03_bootstrap_pvalues",
                                           "04_simulation_power", "05_crossed_insteval", "quickstart"}
    for path in NOTEBOOKS:
        cells = [c for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code"]
        assert [c["execution_count"] for c in cells] == list(range(1, len(cells) + 1)), path.name
        assert not any(o["output_type"] == "error" for c in cells for o in c["outputs"]), path.name
        assert sum(bool(c["outputs"]) for c in cells) >= len(cells) // 2, path.name


def test_executor_names_the_failing_cell(tmp_path):
    notebook = {"cells": [{"cell_type": "code", "source": ["x = 1\n", "x + 1"], "metadata": {}, "outputs": []},
                          {"cell_type": "markdown", "source": ["text"], "metadata": {}},
                          {"cell_type": "code", "source": ["print(x)\n", "1 / 0"], "metadata": {}, "outputs": []}],
                "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    path = tmp_path / "bad.ipynb"
    path.write_text(json.dumps(notebook))
    with pytest.raises(execute.NotebookError, match=r"bad.ipynb, cell 2 \(code cell 2\): ZeroDivisionError"):
        execute.execute(path, save=False)
    notebook["cells"].pop()
    path.write_text(json.dumps(notebook))
    done = execute.execute(path, save=True)
    assert done["cells"][0]["outputs"][0]["data"]["text/plain"] == ["2"]


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_at_reduced_size(path):
    env = {**os.environ, "HLM_JAX_QUICK": "1"}
    done = subprocess.run([sys.executable, str(ROOT / "notebooks" / "execute.py"), "--check", str(path)],
                          env=env, capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, done.stderr[-4000:]
