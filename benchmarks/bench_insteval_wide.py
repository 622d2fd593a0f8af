"""The seed's wide InstEval models (issue 17) beside lme4: time, compile time, peak memory, ratio.

    python benchmarks/bench_insteval_wide.py [--models me_instr_eval1 simple_me_reg] [--repeats 3] [--r]

Each repeat of each model runs in a fresh process with JAX's persistent compilation cache off, so its
first `hj.lmer` (design, statistics, compile, fit, estimates) pays the whole compile and its peak
resident memory is its own. `compile` is what JAX reports for tracing, lowering and XLA's compile
inside that first fit (`hlm_jax.compile_time`); `warm` is a second fit in the same process. The table
gives medians over the repeats (the largest peak). Peak memory is the process's maximum resident set
(resource.getrusage), which includes Python, the data and JAX's CPU buffers; `formula MB` is the
README's estimate, BASE_MB + `wide_bytes`. lme4's times are the issue's
measurements on this 2-core machine (2,582 s and 259 s); with --r, simple_me_reg is also timed with
lme4 in this run (me_instr_eval1 takes 43 minutes in lme4 and is never rerun). Ratios are lme4 / hlm_jax.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
import warnings

WIDE = "y ~ service + dept + d + d:service"
MODELS = {
    "me_instr_eval1": (WIDE + " + (1 | studage/s)", 2582.0),
    "simple_me_reg": ("y ~ service + d + (1 | dept)", 259.0),
}


BASE_MB = 330  # Python, JAX, the data and the design (measured before the wide statistics are built)


def wide_bytes(k: int, pairs: int) -> int:
    """The README's estimate of what the wide fit adds to BASE_MB: 8 bytes × (23k² + 8P), coefficients
    measured (XLA's k × k buffers; the pairs' indices and products on the host and in the program)."""
    return 8 * (23 * k * k + 8 * pairs)


def one(name: str) -> dict:
    """Fit one model twice in this process; the numbers as a dict."""
    import hlm_jax as hj
    from hlm_jax.compile_time import timed
    from hlm_jax.design import build_design
    from hlm_jax.fit import design_stats, wide_stats

    data = hj.datasets.load("insteval")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with timed() as first:
            m = hj.lmer(MODELS[name][0], data)
        start = time.perf_counter()
        hj.lmer(MODELS[name][0], data)
        warm = time.perf_counter() - start
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        design = build_design(MODELS[name][0], data)
    stats, beta0 = design_stats(design)
    w = wide_stats(design, stats, beta0)
    formula = BASE_MB + wide_bytes(w.C.shape[0], w.pair_row_a.shape[0]) / 2 ** 20
    return {"first": first["seconds"], "compile": first["compile_s"], "warm": warm, "peak_mb": peak,
            "formula_mb": formula, "objective": m.objective, "p": m.info.p, "dropped": len(m.info.dropped_fixed),
            "opt": str(m.opt)}


def lme4_seconds(name: str) -> float | None:
    """lme4's time for `name` in this run (lme4's own InstEval, R's level order), or None without R."""
    if shutil.which("Rscript") is None:
        return None
    formula = MODELS[name][0]
    script = (f"suppressMessages(library(lme4)); t <- system.time(m <- suppressWarnings(lmer({formula}, "
              "data = InstEval)))[['elapsed']]; cat(t, REMLcrit(m), '\\n')")
    out = subprocess.run(["Rscript", "-e", script], capture_output=True, text=True)
    return float(out.stdout.split()[0]) if out.returncode == 0 else None


def repeated(name: str, repeats: int, env: dict) -> dict | str:
    """Medians (largest peak) of `repeats` fresh processes, or the last error."""
    runs = []
    for _ in range(repeats):
        out = subprocess.run([sys.executable, __file__, "--one", name], capture_output=True, text=True, env=env)
        if out.returncode != 0:
            return out.stderr.strip()[-500:]
        runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
    summary = {key: statistics.median(r[key] for r in runs) for key in ("first", "compile", "warm")}
    return {**runs[-1], **summary, "peak_mb": max(r["peak_mb"] for r in runs), "firsts": [r["first"] for r in runs]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--r", action="store_true", help="time simple_me_reg with lme4 in this run")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one(args.one)))
        return
    env = dict(os.environ, HLM_JAX_NO_CACHE="1")
    print(f"{'model':16} {'p':>5} {'dropped':>7} {'first s':>8} {'compile s':>9} {'warm s':>7} {'peak MB':>8} "
          f"{'formula MB':>10} {'lme4 s':>7} {'lme4/first':>10} {'lme4/warm':>9}  REML criterion")
    for name in args.models:
        r = repeated(name, args.repeats, env)
        if isinstance(r, str):
            print(name, "failed:", r)
            continue
        lme4 = lme4_seconds(name) if (args.r and name == "simple_me_reg") else None
        source = "this run" if lme4 is not None else "issue"
        lme4 = lme4 if lme4 is not None else MODELS[name][1]
        print(f"{name:16} {r['p']:5d} {r['dropped']:7d} {r['first']:8.1f} {r['compile']:9.1f} {r['warm']:7.1f} "
              f"{r['peak_mb']:8.0f} {r['formula_mb']:10.0f} {lme4:7.0f} {lme4 / r['first']:10.1f} "
              f"{lme4 / r['warm']:9.1f}  {r['objective']:.4f}  (lme4 time: {source})")
        print(f"{'':16} first fits: {', '.join(f'{t:.1f}' for t in r['firsts'])} s; optimiser: {r['opt']}")


if __name__ == "__main__":
    main()
