"""The seed's wide InstEval models (issue 17) beside lme4: time, compile, peak memory.

    python benchmarks/bench_insteval_wide.py [--models me_instr_eval1 simple_me_reg] [--r]

Each model runs in its own process (so its peak resident memory is its own, and JAX's persistent
compilation cache is off there, so the first fit pays the compile): the first `hj.lmer` (design,
statistics, compile, fit, estimates) and a second, warm one in the same process; compile ≈ first −
warm. Peak memory is the process's maximum resident set (resource.getrusage), which includes JAX's
CPU buffers. lme4's times are the issue's measurements on this 2-core machine (2,582 s and 259 s);
with --r, simple_me_reg is also timed with lme4 in this run (me_instr_eval1 takes 43 minutes in lme4
and is never rerun). Ratios are lme4 / hlm_jax.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
import warnings

WIDE = "y ~ service + dept + d + d:service"
MODELS = {
    "me_instr_eval1": (WIDE + " + (1 | studage/s)", 2582.0),
    "simple_me_reg": ("y ~ service + d + (1 | dept)", 259.0),
}


def one(name: str) -> dict:
    """Fit one model twice in this process; the numbers as a dict."""
    import hlm_jax as hj

    data = hj.datasets.load("insteval")
    times = []
    for _ in range(2):
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            m = hj.lmer(MODELS[name][0], data)
        times.append(time.perf_counter() - start)
    return {"first": times[0], "warm": times[1], "compile": max(times[0] - times[1], 0.0),
            "objective": m.objective, "p": m.info.p, "dropped": len(m.info.dropped_fixed),
            "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "opt": str(m.opt)}


def lme4_seconds(name: str) -> float | None:
    """lme4's time for `name` in this run (lme4's own InstEval, R's level order), or None without R."""
    if shutil.which("Rscript") is None:
        return None
    formula = MODELS[name][0]
    script = (f"suppressMessages(library(lme4)); t <- system.time(m <- suppressWarnings(lmer({formula}, "
              "data = InstEval)))[['elapsed']]; cat(t, REMLcrit(m), '\\n')")
    out = subprocess.run(["Rscript", "-e", script], capture_output=True, text=True)
    return float(out.stdout.split()[0]) if out.returncode == 0 else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--r", action="store_true", help="time simple_me_reg with lme4 in this run")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one(args.one)))
        return
    env = dict(os.environ, HLM_JAX_NO_CACHE="1")
    print(f"{'model':16} {'p':>5} {'dropped':>7} {'first s':>8} {'warm s':>7} {'compile s':>9} "
          f"{'peak MB':>8} {'lme4 s':>7} {'lme4/first':>10} {'lme4/warm':>9}  REML criterion")
    for name in args.models:
        out = subprocess.run([sys.executable, __file__, "--one", name], capture_output=True, text=True, env=env)
        if out.returncode != 0:
            print(name, "failed:", out.stderr.strip()[-500:])
            continue
        r = json.loads(out.stdout.strip().splitlines()[-1])
        lme4 = lme4_seconds(name) if (args.r and name == "simple_me_reg") else None
        source = "this run" if lme4 is not None else "issue"
        lme4 = lme4 if lme4 is not None else MODELS[name][1]
        print(f"{name:16} {r['p']:5d} {r['dropped']:7d} {r['first']:8.1f} {r['warm']:7.1f} {r['compile']:9.1f} "
              f"{r['peak_mb']:8.0f} {lme4:7.0f} {lme4 / r['first']:10.1f} {lme4 / r['warm']:9.1f}  "
              f"{r['objective']:.4f}  (lme4 time: {source})")
        print(f"{'':16} optimiser: {r['opt']}")


if __name__ == "__main__":
    main()
