"""Batched fitting (issue 4) side by side with lme4: bootstrap, pb_test, lmlist, fit_many.

    /work/venv/bin/python benchmarks/bench_batch.py            # compile times measured cold
    /work/venv/bin/python benchmarks/bench_batch.py --quick    # fewer lme4 refits (scaled)

Times are wall-clock seconds on this machine; "warm" is the best of three calls after the first,
"compile" is the first call minus the warm time (JAX's persistent compilation cache is switched off
for this script, so it is a true cold compile). lme4 runs through Rscript in the same run when R is
installed (skipped with a note otherwise); where lme4 would take minutes it runs a fraction of the
work and the time is scaled, which the table says.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import tempfile
import time

os.environ.setdefault("HLM_JAX_NO_CACHE", "1")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

import hlm_jax as hj  # noqa: E402

MIXEDMODELS_JL_10K = 3.0   # published: parametricbootstrap, 10,000 sleepstudy replicates, threaded


def timed(fn, repeats: int = 3):
    """(first call, best warm call) in seconds, and the last result."""
    t0 = time.perf_counter()
    result = fn()
    first = time.perf_counter() - t0
    warm = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = fn()
        warm.append(time.perf_counter() - t0)
    return first, min(warm), result


def rscript(code: str, timeout: int = 1800) -> dict | None:
    """Run R code that prints `key value` lines; None without R or lme4."""
    if shutil.which("Rscript") is None:
        return None
    with tempfile.NamedTemporaryFile("w", suffix=".R", delete=False) as fh:
        fh.write("suppressMessages({library(lme4)})\n" + code)
        path = fh.name
    try:
        out = subprocess.run(["Rscript", path], capture_output=True, text=True, timeout=timeout)
    finally:
        os.unlink(path)
    if out.returncode != 0:
        print("R failed:", out.stderr[-500:])
        return None
    values = {}
    for line in out.stdout.splitlines():
        parts = line.split()
        if len(parts) == 2:
            try:
                values[parts[0]] = float(parts[1])
            except ValueError:
                pass
    return values


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="fewer lme4 refits (times scaled)")
    parser.add_argument("--bootstrap-only", action="store_true", help="only the two bootstrap rows")
    args = parser.parse_args()
    rows = []

    def row(task, ours_warm, compile_s, ref_name, ref_s, note=""):
        rows.append(dict(task=task, hlm_jax_warm_s=ours_warm, compile_s=compile_s, reference=ref_name,
                         reference_s=ref_s, speedup=(ref_s / ours_warm) if ref_s else np.nan, note=note))

    sleep = hj.datasets.load("sleepstudy")
    formula = "Reaction ~ Days + (Days | Subject)"
    model = hj.lmer(formula, sleep)

    # 1. parametric bootstrap, 10,000 replicates
    first, warm, boot = timed(lambda: hj.bootstrap(model, n=10_000, seed=0, progress=False))
    print(f"bootstrap 10k: first {first:.2f} s, warm {warm:.3f} s, failed {boot.n_failed}, "
          f"mean Newton steps {boot.iterations.mean():.2f}, {boot.timing}")
    n_boot = 200 if args.quick else 1000
    r = rscript(f"""
        m <- lmer(Reaction ~ Days + (Days | Subject), sleepstudy)
        t0 <- proc.time()[["elapsed"]]
        b <- suppressWarnings(suppressMessages(bootMer(m, function(x) c(fixef(x), sigma(x), getME(x, "theta")),
                                                       nsim = {n_boot}, seed = 1)))
        cat("seconds", proc.time()[["elapsed"]] - t0, "\\n")
    """)
    lme4_boot = r["seconds"] * 10_000 / n_boot if r else np.nan
    row("bootstrap 10,000 (sleepstudy, Days|Subject)", warm, first - warm, "lme4 bootMer", lme4_boot,
        f"lme4 ran {n_boot}, scaled to 10,000" if r else "R not available")
    row("bootstrap 10,000 (sleepstudy, Days|Subject)", warm, first - warm, "MixedModels.jl (published)",
        MIXEDMODELS_JL_10K, "threaded, not measured here")

    # 1b. the crossed bootstrap: penicillin, two grouping factors (blocked Cholesky), 10,000 replicates
    penicillin = hj.datasets.load("penicillin")
    crossed = hj.lmer("diameter ~ 1 + (1 | plate) + (1 | sample)", penicillin)
    first, warm, boot = timed(lambda: hj.bootstrap(crossed, n=10_000, seed=0, progress=False))
    print(f"crossed bootstrap 10k: first {first:.2f} s, warm {warm:.3f} s, failed {boot.n_failed}, "
          f"mean Newton steps {boot.iterations.mean():.2f}")
    n_pen = 200 if args.quick else 1000
    r = rscript(f"""
        m <- lmer(diameter ~ 1 + (1 | plate) + (1 | sample), Penicillin)
        t0 <- proc.time()[["elapsed"]]
        b <- suppressWarnings(suppressMessages(bootMer(m, function(x) c(fixef(x), sigma(x), getME(x, "theta")),
                                                       nsim = {n_pen}, seed = 1)))
        cat("seconds", proc.time()[["elapsed"]] - t0, "\\n")
    """)
    row("bootstrap 10,000 (penicillin, (1|plate) + (1|sample))", warm, first - warm, "lme4 bootMer",
        r["seconds"] * 10_000 / n_pen if r else np.nan, f"lme4 ran {n_pen}, scaled to 10,000" if r else "R not available")
    if args.bootstrap_only:
        print(pd.DataFrame(rows).to_string(index=False))
        return

    # 2. bootstrap likelihood-ratio test
    small = hj.lmer("Reaction ~ Days + (1 | Subject)", sleep)
    first, warm, test = timed(lambda: hj.pb_test(small, model, n=1000, seed=0, progress=False))
    print(f"pb_test 1000: first {first:.2f} s, warm {warm:.3f} s, p_boot {test.p_boot:.4f}")
    n_pb = 100 if args.quick else 200
    r = rscript(f"""
        suppressMessages(library(pbkrtest))
        big <- lmer(Reaction ~ Days + (Days | Subject), sleepstudy)
        small <- lmer(Reaction ~ Days + (1 | Subject), sleepstudy)
        set.seed(1)
        t0 <- proc.time()[["elapsed"]]
        p <- suppressWarnings(suppressMessages(PBmodcomp(big, small, nsim = {n_pb})))
        cat("seconds", proc.time()[["elapsed"]] - t0, "\\n")
    """)
    row("pb_test 1,000 (sleepstudy, (1|S) vs (Days|S))", warm, first - warm, "pbkrtest PBmodcomp",
        r["seconds"] * 1000 / n_pb if r else np.nan, f"pbkrtest ran {n_pb}, scaled" if r else "R not available")

    # 3. lmlist: 100,000 groups x 50 rows x 5 covariates
    G, n = 100_000, 50
    rng = np.random.default_rng(0)
    big = pd.DataFrame({f"x{i}": rng.standard_normal(G * n) for i in range(1, 6)})
    big["g"] = np.repeat(np.arange(G), n)
    big["y"] = big[["x1", "x2", "x3", "x4", "x5"]].sum(axis=1) + rng.standard_normal(G * n)
    first, warm, fits = timed(lambda: hj.lmlist("y ~ x1 + x2 + x3 + x4 + x5 | g", big))
    print(f"lmlist 100k: first {first:.2f} s, warm {warm:.3f} s, failed {len(fits.failed)}")
    shuffled = big.sample(frac=1.0, random_state=1)
    _, warm_shuffled, _ = timed(lambda: hj.lmlist("y ~ x1 + x2 + x3 + x4 + x5 | g", shuffled), repeats=2)
    G_r = 1000 if args.quick else 5000
    r = rscript(f"""
        set.seed(1); G <- {G_r}; n <- 50
        d <- data.frame(matrix(rnorm(G * n * 5), ncol = 5)); names(d) <- paste0("x", 1:5)
        d$g <- rep(seq_len(G), each = n); d$y <- rowSums(d[, 1:5]) + rnorm(G * n)
        t0 <- proc.time()[["elapsed"]]
        l <- lmList(y ~ x1 + x2 + x3 + x4 + x5 | g, d)
        cat("seconds", proc.time()[["elapsed"]] - t0, "\\n")
    """)
    lme4_lmlist = r["seconds"] * G / G_r if r else np.nan
    row("lmlist 100,000 groups x 50 rows x 5 covariates", warm, first - warm, "lme4 lmList", lme4_lmlist,
        f"lme4 ran {G_r} groups, scaled" if r else "R not available")
    row("lmlist, same rows shuffled (sort + pad)", warm_shuffled, np.nan, "lme4 lmList", lme4_lmlist, "")

    # 4. fit_many: 1,000 hsb-sized data sets
    hsb = hj.datasets.load("hsb")
    hsb_formula = "mathach ~ ses + (ses | school)"
    hsb_model = hj.lmer(hsb_formula, hsb)
    sims = hsb_model.simulate(nsim=1000, seed=1).to_numpy()
    frames = [hsb.assign(mathach=sims[:, i]) for i in range(1000)]
    first, warm, table = timed(lambda: hj.fit_many(hsb_formula, frames, progress=False), repeats=2)
    print(f"fit_many 1000 hsb: first {first:.2f} s, warm {warm:.3f} s, converged {table['converged'].mean():.4f}")
    first_y, warm_y, _ = timed(lambda: hj.fit_many(hsb_formula, hsb, responses=sims, progress=False), repeats=2)
    n_loop = 20 if args.quick else 100
    r = rscript(f"""
        d <- read.csv(gzfile("{os.path.join(os.path.dirname(hj.datasets.__file__), 'data', 'hsb.csv.gz')}"))
        m <- lmer(mathach ~ ses + (ses | school), d)
        ys <- simulate(m, nsim = {n_loop}, seed = 1)
        t0 <- proc.time()[["elapsed"]]
        for (i in seq_len({n_loop})) {{ d$mathach <- ys[[i]]; f <- lmer(mathach ~ ses + (ses | school), d) }}
        cat("seconds", proc.time()[["elapsed"]] - t0, "\\n")
    """)
    lme4_loop = r["seconds"] * 1000 / n_loop if r else np.nan
    row("fit_many 1,000 hsb data sets (ses|school)", warm, first - warm, "lme4 lmer in a loop", lme4_loop,
        f"lme4 ran {n_loop}, scaled" if r else "R not available")
    row("fit_many 1,000 responses, one hsb design", warm_y, first_y - warm_y, "lme4 lmer in a loop", lme4_loop, "")

    table = pd.DataFrame(rows)
    with pd.option_context("display.width", 200, "display.max_colwidth", 60, "display.float_format", "{:.3f}".format):
        print()
        print(table.to_string(index=False))


if __name__ == "__main__":
    main()
