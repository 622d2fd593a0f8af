"""Fresh-process latency: `import hlm_jax` + compile + first sleepstudy fit, cold and warm, beside the peers.

    python benchmarks/bench_startup.py [--runs 5] [--profile] [--calls] [--inference]

Every measurement is a new Python (or Rscript) process started with subprocess; the time is the parent's wall
clock around it (interpreter start-up and exit included), median and min of --runs, all in one run:

* cold: no compiled program on disk (XDG_CACHE_HOME points at a new empty directory for every run, so both
  JAX's persistent cache and hlm_jax's kept programs under $XDG_CACHE_HOME/hlm_jax start empty);
* warm: the same cache directory for every run, filled by one untimed run first.

In both, hlm_jax's bytecode is compiled first (`compileall`, as `pip install` does) and the children may write
bytecode (PYTHONDONTWRITEBYTECODE is dropped from their environment): the peers' and JAX's modules are imported
from their installed bytecode, and a user's hlm_jax is too.

Issue 19's goals, checked against this run's own numbers: first fit ≤ 2.0 s cold and ≤ `import jax` + 0.3 s
warm (the median of `python -c 'import jax'` measured here). Peers: mixedlm and mixedlm-rs in a fresh Python,
lme4 in a fresh Rscript (library(lme4) + the same fit); ratios are hlm_jax / peer (< 1: hlm_jax is faster).

--calls adds the first bootstrap(n=1000), pb_test(n=1000), fit_many (1,000 responses) and profile confint in a
fresh process after its first fits, cold and warm (goal ≤ 2 s each, profile ≤ 5 s, in both), with the compile
seconds inside each (`hlm_jax.compile_time.timed`), and lme4's first profile confint and bootMer(nsim=100) in a
fresh Rscript after its fit.

--inference adds the first inference calls after a fit in a fresh process, cold and warm: summary and anova
with Satterthwaite's and Kenward-Roger's df and variance_table(), in that order in one process (a later call
reuses what an earlier one compiled), with the compile seconds inside each; and lmerTest's same calls in a fresh
Rscript after its fit.

--profile adds a stage-by-stage breakdown of one cold and one warm process.
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
PACKAGE = Path(__file__).resolve().parents[1] / "hlm_jax"
DATA = PACKAGE / "datasets" / "data" / "sleepstudy.csv.gz"

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
    m.confint(method="profile", progress=False)
print("RESULT", json.dumps(T))
"""
CALL_GOALS = {"bootstrap(n=1000)": 2.0, "pb_test(n=1000)": 2.0, "fit_many(1000 responses)": 2.0,
              "confint(method='profile')": 5.0}

# the first inference calls after a fit, in the order a researcher meets them, each timed in the same process
INFERENCE_CALLS = ("summary(ddf='Satterthwaite')", "anova(m, ddf='Satterthwaite')", "summary(ddf='Kenward-Roger')",
                   "anova(m, ddf='Kenward-Roger')", "m.variance_table()")
FIRST_INFERENCE = f"""
import json
import hlm_jax as hj
from hlm_jax.compile_time import timed
m = hj.lmer({FORMULA!r}, hj.datasets.load("sleepstudy"))
calls = [lambda: m.summary(ddf="Satterthwaite"), lambda: hj.anova(m, ddf="Satterthwaite"),
         lambda: m.summary(ddf="Kenward-Roger"), lambda: hj.anova(m, ddf="Kenward-Roger"), m.variance_table]
T = {{}}
for name, call in zip({INFERENCE_CALLS!r}, calls):
    with timed() as T[name]:
        call()
print("RESULT", json.dumps(T))
"""

# lmerTest's first summary and anova with each df method after its fit, timed inside R (seconds)
LMERTEST_CALLS = f"""suppressMessages(library(lmerTest)); m <- lmer({FORMULA}, sleepstudy)
t <- c(system.time(summary(m, ddf = "Satterthwaite"))[["elapsed"]],
       system.time(anova(m, ddf = "Satterthwaite"))[["elapsed"]],
       system.time(summary(m, ddf = "Kenward-Roger"))[["elapsed"]],
       system.time(anova(m, ddf = "Kenward-Roger"))[["elapsed"]])
cat("RESULT", t, "\\n")"""

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

# lme4's first calls after its fit, timed inside R (seconds)
LME4_CALLS = f"""suppressMessages(library(lme4)); m <- lmer({FORMULA}, sleepstudy)
t1 <- system.time(suppressMessages(confint(m, method = "profile")))[["elapsed"]]
t2 <- system.time(bootMer(m, fixef, nsim = 100, seed = 1))[["elapsed"]]
cat("RESULT", t1, t2, "\\n")"""

# Stage breakdown of the first fit: imports, design, statistics, the fit program's first call (cold: trace,
# lower and a quick compile; warm: loaded from disk), and a second fit.
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
from hlm_jax.design import build_design
from hlm_jax.model.layout import theta_layout
from hlm_jax.compile_time import timed
from hlm_jax import fit as F
df = hj.datasets.load("sleepstudy")
mark("load the data")
with jax.enable_x64(True):
    design = build_design({FORMULA!r}, df)
    mark("build_design")
    stats, beta0 = F.design_stats(design)
    mark("group statistics (JAX backend start-up)")
    layout = theta_layout(design.info.terms)
    args = jax.device_put((stats, layout.start(), np.asarray(layout.lower, float), np.asarray(1.0)))
    with timed() as c:
        jax.block_until_ready(F.fit_stats(*args, max_iter=200))
    mark("fit_stats: first call")
    T["  of which compile (cold) or load (warm)"] = c["compile_s"]
    m = hj.lmer({FORMULA!r}, df)
    mark("lmer() once more (everything compiled)")
print("RESULT", json.dumps(T))
"""


def child_env(cache_home: str | None) -> dict:
    """The children's environment: hlm_jax's caches under `cache_home`, and Python writing bytecode as it does
    by default (a sandbox's PYTHONDONTWRITEBYTECODE=1 would recompile hlm_jax's sources in every process)."""
    drop = ("HLM_JAX_NO_CACHE", "JAX_COMPILATION_CACHE_DIR", "PYTHONDONTWRITEBYTECODE")
    env = {k: v for k, v in os.environ.items() if k not in drop}
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


def run_r(code: str) -> tuple[float, str]:
    t0 = time.perf_counter()
    proc = subprocess.run(["Rscript", "-e", code], capture_output=True, text=True, check=True)
    wall = time.perf_counter() - t0
    return wall, next((ln[7:] for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), "")


def python_has(module: str) -> bool:
    return subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True).returncode == 0


def lme4_available() -> bool:
    return shutil.which("Rscript") is not None and subprocess.run(
        ["Rscript", "-e", "quit(status = !requireNamespace('lme4', quietly = TRUE))"], capture_output=True
    ).returncode == 0


def row(name: str, walls: list[float], goal: float | None = None, note: str = "") -> float:
    """Print min and median (and the goal, met or not); returns the median."""
    med = float(np.median(walls))
    verdict = "" if goal is None else f"≤ {goal:.2f} s {'met' if med <= goal else 'NOT met'}"
    print(f"{name:<40} {min(walls):7.2f} {med:8.2f}  {verdict:<18}{note}")
    return med


def in_process(results: list[dict]) -> str:
    return (f"(in-process: import {np.median([r['import'] for r in results]):.2f} s, "
            f"first fit {np.median([r['fit'] for r in results]):.2f} s)")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5, help="fresh processes per measurement")
    ap.add_argument("--profile", action="store_true", help="also print a stage breakdown (cold and warm)")
    ap.add_argument("--calls", action="store_true", help="also time the first batched and profile calls")
    ap.add_argument("--inference", action="store_true", help="also time the first summary/anova with ddf and "
                                                               "variance_table")
    args = ap.parse_args(argv)
    n = args.runs
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPU cores; {n} fresh processes each; seconds")
    print(f"{'':<40} {'min':>7} {'median':>8}  goal")
    # hlm_jax's bytecode, as `pip install` (or a first import) leaves it on a user's machine
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(PACKAGE)], check=True, capture_output=True)
    with tempfile.TemporaryDirectory() as tmp:
        env = child_env(os.path.join(tmp, "unused"))
        jax_s = row("python -c 'import jax'", [run_python(IMPORT_JAX, env)[0] for _ in range(n)])
        row("python -c 'import hlm_jax'", [run_python(IMPORT_HLM, env)[0] for _ in range(n)])

        cold = [run_python(FIRST_FIT, child_env(os.path.join(tmp, f"cold{i}"))) for i in range(n)]
        cold_s = row("hlm_jax first fit, cold cache", [w for w, _ in cold], 2.0, in_process([r for _, r in cold]))
        warm_env = child_env(os.path.join(tmp, "warm"))
        run_python(FIRST_FIT, warm_env)  # fills the cache
        warm = [run_python(FIRST_FIT, warm_env) for _ in range(n)]
        warm_s = row("hlm_jax first fit, warm cache", [w for w, _ in warm], jax_s + 0.3,
                     in_process([r for _, r in warm]) + "  goal: import jax + 0.3 s")

        peers = {}
        for name, module, code in (("mixedlm", "mixedlm", MIXEDLM), ("mixedlm-rs", "mixedlm_rs", MIXEDLM_RS)):
            if python_has(module):
                peers[name] = row(f"{name} first fit", [run_python(code, env)[0] for _ in range(n)])
            else:
                print(f"{name + ' first fit':<40} skipped: {module} not installed")
        if lme4_available():
            peers["lme4"] = row("Rscript: library(lme4) + lmer", [run_r(LME4)[0] for _ in range(n)])
        else:
            print(f"{'Rscript: library(lme4) + lmer':<40} skipped: Rscript with lme4 not found")
        print("\nhlm_jax first fit / peer's (medians; < 1: hlm_jax faster)")
        for peer, seconds in peers.items():
            print(f"  vs {peer:<12} cold {cold_s / seconds:5.2f}x   warm {warm_s / seconds:5.2f}x")

        if args.calls:
            first_calls(n, tmp)
        if args.inference:
            first_inference(n, tmp)
        if args.profile:
            prof_cold = run_python(PROFILE, child_env(os.path.join(tmp, "profile")))[1]
            prof_warm = run_python(PROFILE, child_env(os.path.join(tmp, "profile")))[1]
            print(f"\nstage breakdown of one fresh process (s)\n{'stage':<48} {'cold':>7} {'warm':>7}")
            for stage in prof_cold:
                print(f"{stage:<48} {prof_cold[stage]:7.3f} {prof_warm.get(stage, float('nan')):7.3f}")
            total = lambda d: sum(v for k, v in d.items() if not k.startswith(("lmer()", " ")))
            print(f"{'total to the first fit':<48} {total(prof_cold):7.3f} {total(prof_warm):7.3f}")


def first_calls(n: int, tmp: str) -> None:
    """Each first call's wall time in a fresh process (median of n), cold and warm cache, with the compile
    seconds inside; lme4's first profile confint and bootMer in a fresh Rscript."""
    cold = [run_python(FIRST_CALLS, child_env(os.path.join(tmp, f"calls_cold{i}")))[1] for i in range(n)]
    warm_env = child_env(os.path.join(tmp, "calls_warm"))
    run_python(FIRST_CALLS, warm_env)
    warm = [run_python(FIRST_CALLS, warm_env)[1] for _ in range(n)]
    lme4 = {}
    if lme4_available():
        times = np.array([[float(v) for v in run_r(LME4_CALLS)[1].split()] for _ in range(n)])
        lme4 = {"confint(method='profile')": float(np.median(times[:, 0])), "bootstrap(n=1000)": float(np.median(times[:, 1]))}
    print(f"\nfirst call in a fresh process (after its first fits), median of {n}; s\n"
          f"{'call':<28} {'cold':>7} {'compile':>8} {'warm':>7} {'compile':>8}  {'goal':<16} lme4 (same Rscript)")
    for call, goal in CALL_GOALS.items():
        cells = []
        for runs in (cold, warm):
            cells += [float(np.median([r[call]["seconds"] for r in runs])),
                      float(np.median([r[call].get("compile_s", float("nan")) for r in runs]))]
        met = "met" if max(cells[0], cells[2]) <= goal else "NOT met"
        peer = ""
        if call == "confint(method='profile')" and call in lme4:
            peer = f"confint {lme4[call]:.2f} s (ratio cold {cells[0] / lme4[call]:.2f}x, warm {cells[2] / lme4[call]:.2f}x)"
        elif call == "bootstrap(n=1000)" and call in lme4:
            peer = f"bootMer(nsim = 100) {lme4[call]:.2f} s"
        print(f"{call:<28} {cells[0]:7.2f} {cells[1]:8.2f} {cells[2]:7.2f} {cells[3]:8.2f}  ≤ {goal:.0f} s {met:<9} {peer}")



def first_inference(n: int, tmp: str) -> None:
    """Each first inference call's wall time in a fresh process after its fit (median of n), cold and warm
    cache, with the compile seconds inside; lmerTest's same calls in a fresh Rscript after its fit."""
    cold = [run_python(FIRST_INFERENCE, child_env(os.path.join(tmp, f"inference_cold{i}")))[1] for i in range(n)]
    warm_env = child_env(os.path.join(tmp, "inference_warm"))
    run_python(FIRST_INFERENCE, warm_env)
    warm = [run_python(FIRST_INFERENCE, warm_env)[1] for _ in range(n)]
    peer = {}
    has = "quit(status = !all(sapply(c('lmerTest', 'pbkrtest'), requireNamespace, quietly = TRUE)))"
    if shutil.which("Rscript") and subprocess.run(["Rscript", "-e", has], capture_output=True).returncode == 0:
        times = np.median([[float(v) for v in run_r(LMERTEST_CALLS)[1].split()] for _ in range(n)], axis=0)
        peer = dict(zip(INFERENCE_CALLS, times))
    print(f"\nfirst inference call in a fresh process (after its fit, in this order), median of {n}; s\n"
          f"{'call':<32} {'cold':>7} {'compile':>8} {'warm':>7} {'compile':>8}  lmerTest (same Rscript)")
    for call in INFERENCE_CALLS:
        cells = [float(np.median([r[call][key] for r in runs])) for runs in (cold, warm)
                 for key in ("seconds", "compile_s")]
        ratio = (f"{peer[call]:.2f} s (ratio cold {cells[0] / peer[call]:.1f}x, warm {cells[2] / peer[call]:.1f}x)"
                 if peer.get(call, 0) > 0 else "")
        print(f"{call:<32} {cells[0]:7.2f} {cells[1]:8.2f} {cells[2]:7.2f} {cells[3]:8.2f}  {ratio}")


if __name__ == "__main__":
    main()
