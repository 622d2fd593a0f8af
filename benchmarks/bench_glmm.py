"""GLMMs side by side with lme4's glmer (issue 15): cbpp, a crossed binomial (VerbAgg), a cbpp bootstrap and
cbpp's profile-likelihood intervals.

    python benchmarks/bench_glmm.py            # lme4 through Rscript in the same run
    python benchmarks/bench_glmm.py --boot 1000
    python benchmarks/bench_glmm.py --first 5   # only the first glmer in fresh processes, cold and warm

"warm" is the median of five calls after the first (for glmer after the first UPGRADE_CALLS: a first fit runs
XLA's quickly compiled program, the optimised one from the UPGRADE_CALLS-th fit of that shape on, see
hlm_jax.compile_time); "compile" is the first call minus warm (JAX's persistent compilation cache and hlm_jax's
kept programs are off for this script). lme4's times are the median of five glmer calls after a warm-up, bootMer
on a fraction of the replicates scaled up (the table says so), and one confint(method = "profile") after a warm-up.

--first N: the first glmer (cbpp as hj.datasets.load gives it) in N fresh processes, timed inside the child
(`compile_time.timed`: seconds and compile seconds), with an empty cache folder each (cold) and with one folder
filled by an untimed run (warm: the kept programs are loaded), beside lme4's first glmer in a fresh Rscript
(system.time around it, after library(lme4)); medians (bench_startup's child processes and environment).
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import tempfile
import time
import warnings

import numpy as np

os.environ.setdefault("HLM_JAX_NO_CACHE", "1")

import hlm_jax as hj  # noqa: E402
from hlm_jax.compile_time import UPGRADE_CALLS  # noqa: E402
from bench_startup import child_env, lme4_available, run_python, run_r  # noqa: E402  (this folder's)

CBPP = "cbind(incidence, size - incidence) ~ period + (1 | herd)"
VERBAGG = "r2 ~ Anger + Gender + btype + situ + (1 | id) + (1 | item)"


def timed(fn, repeats: int = 5, settle: int = 0):
    """(first call, median warm call) in seconds; the warm calls follow `settle` untimed ones."""
    t0 = time.perf_counter()
    fn()
    first = time.perf_counter() - t0
    for _ in range(settle):
        fn()
    warm = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        warm.append(time.perf_counter() - t0)
    return first, float(np.median(warm))


R_CODE = """
suppressMessages(library(lme4))
cbpp <- read.csv(gzfile("{cbpp}")); cbpp$period <- factor(cbpp$period); cbpp$herd <- factor(cbpp$herd)
va <- read.csv(gzfile("{verbagg}")); va$id <- factor(va$id); va$item <- factor(va$item)
med <- function(f) {{ f(); median(replicate(5, system.time(f())[["elapsed"]])) }}
cat("cbpp", med(function() glmer({cbpp_f}, cbpp, family = binomial)), "\\n")
cat("verbagg", med(function() glmer({va_f}, va, family = binomial)), "\\n")
m <- glmer({cbpp_f}, cbpp, family = binomial)
t <- system.time(suppressMessages(suppressWarnings(bootMer(m, function(x) fixef(x), nsim = {nboot}))))[["elapsed"]]
cat("boot", t, "\\n")
invisible(confint(m, method = "profile"))
cat("profile", system.time(suppressMessages(confint(m, method = "profile")))[["elapsed"]], "\\n")
"""


def lme4_times(nboot: int) -> dict | None:
    if shutil.which("Rscript") is None:
        return None
    data = os.path.join(os.path.dirname(hj.datasets.__file__), "data")
    code = R_CODE.format(cbpp=os.path.join(data, "cbpp.csv.gz"), verbagg=os.path.join(data, "verbagg.csv.gz"),
                         cbpp_f=CBPP, va_f=VERBAGG, nboot=nboot)
    with tempfile.NamedTemporaryFile("w", suffix=".R", delete=False) as fh:
        fh.write(code)
    try:
        out = subprocess.run(["Rscript", fh.name], capture_output=True, text=True, timeout=3600)
    finally:
        os.unlink(fh.name)
    return {line.split()[0]: float(line.split()[1]) for line in out.stdout.splitlines() if line.strip()}


FIRST_GLMER = f"""
import json, time
t0 = time.perf_counter()
import hlm_jax as hj
from hlm_jax.compile_time import timed
t1 = time.perf_counter()
with timed() as t:
    m = hj.glmer({CBPP!r}, hj.datasets.load("cbpp"), family="binomial")
print("RESULT", json.dumps({{"import": t1 - t0, **t, "objective": m.objective}}))
"""


def first_glmer(n: int) -> None:
    """The first glmer in n fresh processes, cold and warm cache, beside lme4's first glmer in fresh Rscripts."""
    with tempfile.TemporaryDirectory() as tmp:
        cold = [run_python(FIRST_GLMER, child_env(os.path.join(tmp, f"cold{i}")))[1] for i in range(n)]
        run_python(FIRST_GLMER, child_env(os.path.join(tmp, "warm")))   # fills the cache
        warm = [run_python(FIRST_GLMER, child_env(os.path.join(tmp, "warm")))[1] for _ in range(n)]
    print(f"first glmer in a fresh process (cbpp), median of {n}; s\n"
          f"{'':<24} {'glmer':>7} {'compile':>8} {'import':>7}")
    for name, runs in (("hlm_jax, cold cache", cold), ("hlm_jax, warm cache", warm)):
        cells = [float(np.median([r[key] for r in runs])) for key in ("seconds", "compile_s", "import")]
        print(f"{name:<24} {cells[0]:7.2f} {cells[1]:8.2f} {cells[2]:7.2f}")
    if lme4_available():
        data = os.path.join(os.path.dirname(hj.datasets.__file__), "data", "cbpp.csv.gz")
        code = (f'suppressMessages(library(lme4)); d <- read.csv(gzfile("{data}")); '
                f'cat("RESULT", system.time(glmer({CBPP}, d, family = binomial))[["elapsed"]], "\\n")')
        print(f"{'lme4 glmer, fresh Rscript':<24} {np.median([float(run_r(code)[1]) for _ in range(n)]):7.2f}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--boot", type=int, default=1000, help="bootstrap replicates for hlm_jax")
    parser.add_argument("--lme4-boot", type=int, default=100, help="bootMer replicates (scaled to --boot)")
    parser.add_argument("--first", type=int, default=0, help="only the first glmer in this many fresh processes")
    args = parser.parse_args()
    if args.first:
        return first_glmer(args.first)
    warnings.simplefilter("ignore")
    cbpp = hj.datasets.load("cbpp").astype({"period": str, "herd": str})
    va = hj.datasets.load("verbagg")
    rows = []
    first, warm = timed(lambda: hj.glmer(CBPP, cbpp), settle=UPGRADE_CALLS)
    rows.append(("cbpp glmer (Laplace)", first - warm, warm, "cbpp"))
    first, warm = timed(lambda: hj.glmer(VERBAGG, va), settle=UPGRADE_CALLS)
    rows.append(("VerbAgg crossed binomial, 7,584 rows", first - warm, warm, "verbagg"))
    m = hj.glmer(CBPP, cbpp)
    first, warm = timed(lambda: m.bootstrap(n=args.boot, seed=1, progress=False), repeats=3)
    rows.append((f"cbpp bootstrap, {args.boot} refits", first - warm, warm, "boot"))
    first, warm = timed(lambda: m.confint(method="profile"))
    rows.append(("cbpp confint(method='profile')", first - warm, warm, "profile"))
    peer = lme4_times(args.lme4_boot) or {}
    if "boot" in peer:
        peer["boot"] *= args.boot / args.lme4_boot
    print(f"{'case':42s} {'compile s':>10s} {'warm s':>9s} {'lme4 s':>9s} {'ratio':>7s}")
    for name, compile_s, warm, key in rows:
        ref = peer.get(key)
        ratio = f"{warm / ref:7.3f}" if ref else "    n/a"
        note = f" (bootMer {args.lme4_boot} refits scaled)" if key == "boot" and ref else ""
        print(f"{name:42s} {compile_s:10.2f} {warm:9.3f} {ref if ref else float('nan'):9.3f} {ratio}{note}")


if __name__ == "__main__":
    main()
