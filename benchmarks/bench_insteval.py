"""InstEval, `y ~ service + (1|s) + (1|d) + (1|dept)` (73,421 ratings), hlm_jax beside lme4 in one run.

    python benchmarks/bench_insteval.py [--repeat 3] [--r-repeat 1]

hlm_jax: design, unit scaling, statistics and the moment start (numpy), then the compile of the
fit program and the warm fit (Newton optimisation + estimates) reported separately, min over
--repeat warm fits; also `hj.lmer` end to end warm (formula to fitted model). lme4: `lmer` timed
inside R with system.time, min over --r-repeat fits. The ratios are hlm_jax / lme4 (the goal is
≤ 0.1). Also printed: both REML criteria (lme4 reports a failed gradient check here; ours should be
no higher than lme4's by more than 1e-6 relative).
"""
from __future__ import annotations

import argparse
import resource
import shutil
import subprocess
import tempfile
import time
import warnings

import jax
import jax.numpy as jnp
import numpy as np

import hlm_jax as hj
from hlm_jax.design import build_design
from hlm_jax.fit import crossed_stats, fit_crossed
from hlm_jax.likelihood.crossed_newton import moment_start
from hlm_jax.model.layout import theta_layout
from hlm_jax.scaling import design_scales, scale_design

FORMULA = "y ~ service + (1 | s) + (1 | d) + (1 | dept)"


def time_hlm_jax(repeat: int) -> dict:
    data = hj.datasets.load("insteval").astype({"service": str})
    start = time.perf_counter()
    design = build_design(FORMULA, data)
    layout = theta_layout(design.info.terms)
    with jax.enable_x64(True):
        stats, _ = crossed_stats(scale_design(design, design_scales(design, layout)))
        theta0 = moment_start(stats, layout.start())
        prep = time.perf_counter() - start
        args = (stats, jnp.asarray(theta0), jnp.asarray(layout.lower), jnp.asarray(1.0))
        start = time.perf_counter()
        compiled = fit_crossed.lower(*args).compile()
        compile_s = time.perf_counter() - start
        fits = []
        for _ in range(repeat):
            start = time.perf_counter()
            state, _ = jax.block_until_ready(compiled(*args))
            fits.append(time.perf_counter() - start)
    ends = []
    for _ in range(repeat):
        start = time.perf_counter()
        m = hj.lmer(FORMULA, data)
        ends.append(time.perf_counter() - start)
    return {"prep": prep, "compile": compile_s, "fit": min(fits), "end_to_end": min(ends), "objective": m.objective,
            "iterations": int(state.iterations), "Q2": stats.Q2, "pairs": int(stats.pair_val.shape[0]),
            "converged": m.converged, "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def time_lme4(repeat: int) -> dict | None:
    if shutil.which("Rscript") is None:
        print("lme4: Rscript not found, skipped")
        return None
    with tempfile.NamedTemporaryFile("w", suffix=".csv", delete=False) as handle:
        hj.datasets.load("insteval").to_csv(handle.name, index=False)
    script = f"""
suppressMessages(library(lme4))
d <- read.csv("{handle.name}")
for (v in c("s", "d", "dept", "service")) d[[v]] <- factor(d[[v]])
best <- Inf
for (i in seq_len({repeat})) {{
  t <- system.time(m <- suppressWarnings(lmer({FORMULA.replace('"', "'")}, d)))[["elapsed"]]
  best <- min(best, t)
}}
cat(format(best, digits = 10), format(REMLcrit(m), digits = 15), "\\n")
"""
    out = subprocess.run(["Rscript", "-e", script], capture_output=True, text=True)
    if out.returncode != 0:
        print("lme4: failed, skipped:", out.stderr.strip()[-300:])
        return None
    seconds, objective = (float(v) for v in out.stdout.split())
    return {"fit": seconds, "objective": objective}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--r-repeat", type=int, default=1)
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    ours = time_hlm_jax(args.repeat)
    print(f"hlm_jax: design+scaling+statistics+start {ours['prep']:.2f} s, compile {ours['compile']:.1f} s, "
          f"warm fit {ours['fit']:.2f} s ({ours['iterations']} Newton steps; dense block {ours['Q2']}, "
          f"{ours['pairs']} pairs), warm lmer end to end {ours['end_to_end']:.2f} s, "
          f"REML criterion {ours['objective']:.6f}, converged {ours['converged']}, "
          f"peak resident memory {ours['peak_mb']:.0f} MB")
    peer = time_lme4(args.r_repeat)
    if peer:
        print(f"lme4:    fit {peer['fit']:.2f} s, REML criterion {peer['objective']:.6f}")
        rel = (ours['objective'] - peer['objective']) / abs(peer['objective'])
        print(f"hlm_jax / lme4: warm fit {ours['fit'] / peer['fit']:.3f}x, end to end "
              f"{ours['end_to_end'] / peer['fit']:.3f}x (goal <= 0.1x); criterion (ours - lme4) / |lme4| = "
              f"{rel:.2e} (must be <= 1e-6)")
    if not np.isfinite(ours["objective"]):
        raise SystemExit("hlm_jax fit failed")


if __name__ == "__main__":
    main()
