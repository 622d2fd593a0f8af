"""GLMMs side by side with lme4's glmer (issue 15): cbpp, a crossed binomial (VerbAgg), a cbpp bootstrap and
cbpp's profile-likelihood intervals.

    python benchmarks/bench_glmm.py            # lme4 through Rscript in the same run
    python benchmarks/bench_glmm.py --boot 1000

"warm" is the median of five calls after the first; "compile" is the first call minus warm (JAX's
persistent compilation cache is off for this script). lme4's times are the median of five glmer calls
after a warm-up, bootMer on a fraction of the replicates scaled up (the table says so), and one
confint(method = "profile") after a warm-up.
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

CBPP = "cbind(incidence, size - incidence) ~ period + (1 | herd)"
VERBAGG = "r2 ~ Anger + Gender + btype + situ + (1 | id) + (1 | item)"


def timed(fn, repeats: int = 5):
    """(first call, median warm call) in seconds."""
    t0 = time.perf_counter()
    fn()
    first = time.perf_counter() - t0
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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--boot", type=int, default=1000, help="bootstrap replicates for hlm_jax")
    parser.add_argument("--lme4-boot", type=int, default=100, help="bootMer replicates (scaled to --boot)")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    cbpp = hj.datasets.load("cbpp").astype({"period": str, "herd": str})
    va = hj.datasets.load("verbagg")
    rows = []
    first, warm = timed(lambda: hj.glmer(CBPP, cbpp))
    rows.append(("cbpp glmer (Laplace)", first - warm, warm, "cbpp"))
    first, warm = timed(lambda: hj.glmer(VERBAGG, va))
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
