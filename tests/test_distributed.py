"""The batched programs across processes (issue 19): two processes on localhost, joined by
`jax.distributed` through the CLI's --coordinator flags, give the same bootstrap and fit_many
as this one process (pb_test runs the bootstrap program), and every process gets the whole result."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import hlm_jax as hj

FORMULA = "Reaction ~ Days + (Days | Subject)"
N = 40

WORKER = textwrap.dedent("""
    import sys
    import numpy as np
    from hlm_jax import cli
    import hlm_jax as hj
    out, port, pid = sys.argv[1], sys.argv[2], sys.argv[3]
    code = cli.main(["bootstrap", "Reaction ~ Days + (Days | Subject)", "--dataset", "sleepstudy", "--n", "40",
                     "--seed", "7", "--out", out + ".csv", "--no-progress", "--coordinator", "localhost:" + port,
                     "--num-processes", "2", "--process-id", pid])
    import jax
    assert code == 0 and jax.process_count() == 2 and len(jax.devices()) == 2
    d = hj.datasets.load("sleepstudy")
    model = hj.lmer("Reaction ~ Days + (Days | Subject)", d)
    many = hj.fit_many("Reaction ~ Days + (Days | Subject)", d, responses=model.simulate(nsim=8, seed=2),
                       progress=False)
    np.savez(out + ".npz", many=many.drop(columns="iterations").to_numpy(float))
""")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory):
    """Outputs of both processes: {process id: (bootstrap CSV path, npz contents)}."""
    tmp = tmp_path_factory.mktemp("distributed")
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env.update(JAX_PLATFORMS="cpu", PYTHONPATH=str(Path(hj.__file__).parents[1]))
    port = str(_free_port())
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, str(tmp / f"p{i}"), port, str(i)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT) for i in range(2)]
    try:
        logs = [p.communicate(timeout=300)[0].decode() for p in procs]
    finally:
        for p in procs:
            p.kill()
    for p, log in zip(procs, logs):
        assert p.returncode == 0, log[-3000:]
    return {i: (tmp / f"p{i}.csv", dict(np.load(tmp / f"p{i}.npz"))) for i in range(2)}


def test_bootstrap_on_two_processes_equals_one(two_processes):
    """Process 0 writes the CSV (process 1 none); the replicates are this process's for the seed."""
    path, _ = two_processes[0]
    assert not two_processes[1][0].exists()
    table = pd.read_csv(path, index_col="replicate")
    ours = hj.lmer(FORMULA, hj.datasets.load("sleepstudy")).bootstrap(n=N, seed=7, progress=False)
    assert list(table.columns) == list(ours.replicates.columns) + ["converged"]
    np.testing.assert_array_equal(table["converged"].to_numpy(), ours.converged)
    np.testing.assert_allclose(table.drop(columns="converged").to_numpy(), ours.replicates.to_numpy(),
                               rtol=1e-6, atol=1e-8)


def test_fit_many_on_two_processes_equals_one(two_processes):
    """Both processes hold the whole result, equal to one process's."""
    d = hj.datasets.load("sleepstudy")
    model = hj.lmer(FORMULA, d)
    many = hj.fit_many(FORMULA, d, responses=model.simulate(nsim=8, seed=2), progress=False)
    for _, out in two_processes.values():
        np.testing.assert_allclose(out["many"], many.drop(columns="iterations").to_numpy(float), rtol=1e-6,
                                   atol=1e-8)
