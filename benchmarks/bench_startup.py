"""Fresh-process latency: `import hlm_jax` + compile + first sleepstudy fit, cold and warm.

    python benchmarks/bench_startup.py [--runs 5] [--profile] [--calls]

Every measurement is a new Python process started with subprocess; the time is
the parent's wall clock around it (interpreter start-up and exit included).

* cold: JAX's persistent compilation cache is empty (XDG_CACHE_HOME points at a
  new empty directory for every run, so hlm_jax's cache under
  $XDG_CACHE_HOME/hlm_jax/jax starts empty);
* warm: the same cache directory for every run, filled by one untimed run first.

For comparison it also times `import jax` alone, `import hlm_jax` alone, lme4 in a
fresh `Rscript` (library(lme4) + the same fit) and, when installed, mixedlm and
mixedlm-rs in a fresh Python. Goals: cold ≤ 2 s, warm ≤ 1 s.

--calls adds the first bootstrap(n=1000), pb_test(n=1000), fit_many (1,000 responses) and profile confint in
a fresh process after its first fit, cold and warm cache (goal ≤ 2 s each, profile ≤ 5 s), with the compile
seconds inside each (JAX's monitoring events, `hlm_jax.compile_time`, when the checkout has it).

--profile adds a stage-by-stage breakdown of one cold and one warm process
(imports, design, tracing / lowering / XLA compile of each jitted program, first run).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

FORMULA = "Reaction ~ Days + (Days | Subject)"
DATA = Path(__file__).resolve().parents[1] / "hlm_jax" / "datasets" / "data" / "sleepstudy.csv.gz"

FIRST_FIT = f"""
import json, time
t0 = time.perf_counter()
import hlm_jax as hj
t1 = time.perf_counter()
m = hj.lmer({FORMULA!r}, hj.datasets.load("sleepstudy"))
t2 = time.perf_counter()
print("RESULT", json.dumps({{"import": t1 - t0, "fit": t2 - t1, "objective": m.objective}}))
"""

FIRST_CALLS = f"""
import json, time
import hlm_jax as hj
try:
    from hlm_jax.compile_time import timed
except ImportError:   # an older checkout: wall time only
    from contextlib import contextmanager
    @contextmanager
    def timed():
        out = {{}}; t = time.perf_counter(); yield out; out["seconds"] = time.perf_counter() - t
d = hj.datasets.load("sleepstudy")
m = hj.lmer({FORMULA!r}, d)
small = hj.lmer("Reaction ~ Days + (1 | Subject)", d, REML=False)
big = hj.lmer({FORMULA!r}, d, REML=False)
Y = m.simulate(nsim=1000, seed=1)
T = {{}}
with timed() as T["bootstrap(n=1000)"]:
    m.bootstrap(n=1000, seed=1, progress=False)
with timed() as T["pb_test(n=1000)"]:
    hj.pb_test(small, big, n=1000, seed=1, progress=False)
with timed() as T["fit_many(1000 responses)"]:
    hj.fit_many({FORMULA!r}, d, responses=Y, progress=False)
with timed() as T["confint(method='profile')"]:
    m.confint(method="profile")
print("RESULT", json.dumps(T))
"""
CALL_GOALS = {"bootstrap(n=1000)": "≤ 2 s", "pb_test(n=1000)": "≤ 2 s", "fit_many(1000 responses)": "≤ 2 s",
              "confint(method='profile')": "≤ 5 s"}

IMPORT_JAX = "import jax"
IMPORT_HLM = "import hlm_jax"

MIXEDLM = f"""
import pandas as pd, mixedlm
mixedlm.lmer({FORMULA!r}, pd.read_csv({str(DATA)!r}), REML=True)
"""

MIXEDLM_RS = f"""
import pandas as pd, mixedlm_rs
mixedlm_rs.mixedlm("Reaction ~ Days", pd.read_csv({str(DATA)!r}), groups="Subject", re_formula="~Days").fit()
"""

LME4 = f"suppressMessages(library(lme4)); m <- lmer({FORMULA}, sleepstudy)"

# Stage breakdown of the first fit, through JAX's ahead-of-time API (trace → lower → compile).
PROFILE = f"""
import json, time
T = {{}}
t = time.perf_counter()
def mark(name):
    global t
    now = time.perf_counter(); T[name] = now - t; t = now
import jax
mark("import jax")
import numpy as np, pandas
mark("import numpy, pandas")
import hlm_jax as hj
mark("import hlm_jax (rest)")
import jax.numpy as jnp
from hlm_jax.design import build_design
from hlm_jax.model.layout import theta_layout
from hlm_jax import fit as F
df = hj.datasets.load("sleepstudy")
with jax.enable_x64(True):
    design = build_design({FORMULA!r}, df)
    mark("build_design")
    jax.block_until_ready(jnp.zeros(3))
    mark("JAX backend start-up")
    stats, beta0 = F.design_stats(design)
    jax.block_until_ready(stats)
    mark("group statistics")
    layout = theta_layout(design.info.terms)
    args = (stats, jnp.asarray(layout.start()), jnp.asarray(layout.lower), jnp.asarray(1.0))
    traced = F.fit_stats.jit.trace(*args, max_iter=200)
    mark("fit_stats: trace")
    lowered = traced.lower()
    mark("fit_stats: lower")
    compiled = lowered.compile(F.fit_stats.quick_options)
    mark("fit_stats: XLA compile, quick options (or JAX cache load)")
    jax.block_until_ready(compiled(*args))
    mark("fit_stats: first run")
    m = hj.lmer({FORMULA!r}, df)
    mark("lmer() once more (everything compiled)")
print("RESULT", json.dumps(T))
"""


def child_env(cache_home: str | None) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("HLM_JAX_NO_CACHE", "JAX_COMPILATION_CACHE_DIR")}
    if cache_home is not None:
        env["XDG_CACHE_HOME"] = cache_home
    return env


def run_python(code: str, env: dict) -> tuple[float, dict | None]:
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-2000:])
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
    return wall, (json.loads(line[7:]) if line else None)


def python_has(module: str) -> bool:
    return subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True).returncode == 0


def lme4_available() -> bool:
    return shutil.which("Rscript") is not None and subprocess.run(
        ["Rscript", "-e", "quit(status = !requireNamespace('lme4', quietly = TRUE))"], capture_output=True
    ).returncode == 0


def summarise(name: str, walls: list[float], goal: str = "", inner: list[dict] | None = None) -> None:
    extra = ""
    if inner:
        imp = min(r["import"] for r in inner)
        fit = min(r["fit"] for r in inner)
        extra = f"  (in-process: import {imp:.2f} s, first fit {fit:.2f} s)"
    print(f"{name:<40} {min(walls):7.2f} {float(np.median(walls)):8.2f}  {goal:<8}{extra}")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5, help="fresh processes per measurement")
    ap.add_argument("--profile", action="store_true", help="also print a stage breakdown (cold and warm)")
    ap.add_argument("--calls", action="store_true", help="also time the first batched and profile calls")
    args = ap.parse_args(argv)
    n = args.runs
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPU cores; {n} fresh processes each; seconds")
    print(f"{'':<40} {'min':>7} {'median':>8}  goal")
    with tempfile.TemporaryDirectory() as tmp:
        env = child_env(os.path.join(tmp, "unused"))
        summarise("python -c 'import jax'", [run_python(IMPORT_JAX, env)[0] for _ in range(n)])
        summarise("python -c 'import hlm_jax'", [run_python(IMPORT_HLM, env)[0] for _ in range(n)])

        cold = []
        for i in range(n):
            cold.append(run_python(FIRST_FIT, child_env(os.path.join(tmp, f"cold{i}"))))
        summarise("hlm_jax first fit, cold cache", [w for w, _ in cold], "≤ 2 s", [r for _, r in cold])

        warm_env = child_env(os.path.join(tmp, "warm"))
        run_python(FIRST_FIT, warm_env)  # fills the cache
        warm = [run_python(FIRST_FIT, warm_env) for _ in range(n)]
        summarise("hlm_jax first fit, warm cache", [w for w, _ in warm], "≤ 1 s", [r for _, r in warm])

        for name, module, code in (("mixedlm first fit", "mixedlm", MIXEDLM),
                                   ("mixedlm-rs first fit", "mixedlm_rs", MIXEDLM_RS)):
            if python_has(module):
                summarise(name, [run_python(code, env)[0] for _ in range(n)])
            else:
                print(f"{name:<40} skipped: {module} not installed")
        if lme4_available():
            walls = []
            for _ in range(n):
                t0 = time.perf_counter()
                subprocess.run(["Rscript", "-e", LME4], capture_output=True, check=True)
                walls.append(time.perf_counter() - t0)
            summarise("Rscript: library(lme4) + lmer", walls)
        else:
            print(f"{'Rscript: library(lme4) + lmer':<40} skipped: Rscript with lme4 not found")

        if args.calls:
            first_calls(n, tmp)
        if args.profile:
            try:
                prof_cold = run_python(PROFILE, child_env(os.path.join(tmp, "profile")))[1]
                prof_warm = run_python(PROFILE, child_env(os.path.join(tmp, "profile")))[1]
            except RuntimeError as exc:  # the breakdown uses hlm_jax.fit internals, which may move
                print(f"\nstage breakdown failed (hlm_jax internals changed?): {str(exc).strip().splitlines()[-1]}")
                return
            print(f"\nstage breakdown of one fresh process (s)\n{'stage':<48} {'cold':>7} {'warm':>7}")
            for stage in prof_cold:
                print(f"{stage:<48} {prof_cold[stage]:7.3f} {prof_warm.get(stage, float('nan')):7.3f}")
            total = lambda d: sum(v for k, v in d.items() if not k.startswith("lmer()"))
            print(f"{'total to the first fit':<48} {total(prof_cold):7.3f} {total(prof_warm):7.3f}")


def first_calls(n: int, tmp: str) -> None:
    """Each first call's wall time in a fresh process (min of n), cold and warm cache; compile seconds inside."""
    cold = [run_python(FIRST_CALLS, child_env(os.path.join(tmp, f"calls_cold{i}")))[1] for i in range(n)]
    warm_env = child_env(os.path.join(tmp, "calls_warm"))
    run_python(FIRST_CALLS, warm_env)
    warm = [run_python(FIRST_CALLS, warm_env)[1] for _ in range(n)]
    print(f"\nfirst call in a fresh process (after its first fit), min of {n}; s\n"
          f"{'call':<28} {'cold':>7} {'compile':>8} {'warm':>7} {'compile':>8}  goal")
    for call, goal in CALL_GOALS.items():
        row = []
        for runs in (cold, warm):
            best = min(runs, key=lambda r: r[call]["seconds"])[call]
            row += [best["seconds"], best.get("compile_s", float("nan"))]
        print(f"{call:<28} {row[0]:7.2f} {row[1]:8.2f} {row[2]:7.2f} {row[3]:8.2f}  {goal}")


if __name__ == "__main__":
    main()
