"""InstEval, `y ~ service + (1|s) + (1|d) + (1|dept)` (73,421 ratings), hlm_jax beside lme4 in one run.

    python benchmarks/bench_insteval.py [--repeat 2] [--r-repeat 1]

hlm_jax: design and statistics (numpy), then the compile of the fit program and the
warm fit (optimisation + estimates) reported separately; min over --repeat warm fits.
lme4: `lmer` timed inside R with system.time, min over --r-repeat fits after none
(one fit takes about 20 s). The ratio is lme4 / hlm_jax warm fit. Also printed: both
REML criteria (lme4 reports a failed gradient check here; ours should be lower).
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import tempfile
import time
import warnings

import jax
import jax.numpy as jnp

import hlm_jax as hj
from hlm_jax.design import build_design
from hlm_jax.fit import crossed_stats, fit_crossed
from hlm_jax.model.layout import theta_layout

FORMULA = "y ~ service + (1 | s) + (1 | d) + (1 | dept)"


def time_hlm_jax(repeat: int) -> dict:
    data = hj.datasets.load("insteval").astype({"service": str})
    start = time.perf_counter()
    design = build_design(FORMULA, data)
    with jax.enable_x64(True):
        stats, _ = crossed_stats(design)
        prep = time.perf_counter() - start
        layout = theta_layout(design.info.terms)
        args = (stats, jnp.asarray(layout.start()), jnp.asarray(layout.lower), jnp.asarray(1.0))
        start = time.perf_counter()
        compiled = fit_crossed.lower(*args).compile()
        compile_s = time.perf_counter() - start
        fits = []
        for _ in range(repeat):
            start = time.perf_counter()
            state, _ = jax.block_until_ready(compiled(*args))
            fits.append(time.perf_counter() - start)
    return {"prep": prep, "compile": compile_s, "fit": min(fits), "objective": float(state.f),
            "iterations": int(state.iterations), "Q2": stats.Q2, "pairs": int(stats.pair_val.shape[0])}


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
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--r-repeat", type=int, default=1)
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    ours = time_hlm_jax(args.repeat)
    print(f"hlm_jax: design+statistics {ours['prep']:.2f} s, compile {ours['compile']:.1f} s, "
          f"warm fit {ours['fit']:.2f} s ({ours['iterations']} iterations; dense block {ours['Q2']}, "
          f"{ours['pairs']} pairs), REML criterion {ours['objective']:.6f}")
    peer = time_lme4(args.r_repeat)
    if peer:
        print(f"lme4:    fit {peer['fit']:.2f} s, REML criterion {peer['objective']:.6f}")
        print(f"ratio lme4 / hlm_jax warm fit: {peer['fit'] / ours['fit']:.2f}x; "
              f"criterion difference (lme4 - ours): {peer['objective'] - ours['objective']:.2e}")


if __name__ == "__main__":
    main()
