"""Warm single-fit times of hlm_jax against lme4, statsmodels, mixedlm and mixedlm-rs, side by side.

    python benchmarks/bench_core.py [--repeat 7] [--cases sleepstudy_rs_reml hsb_full_reml]

Every package fits the same model from the same pandas DataFrame (lme4 from the
same rows written to CSV and read back in R). Each time is end to end, formula +
data frame → fitted model (design building included), the minimum over
`--repeat` runs after one warm-up fit (so compile time and first-call overheads
are excluded). lme4 is timed inside R with system.time, min over 5 blocks after
a warm-up fit. The ratio column is peer time / hlm_jax time (> 1: hlm_jax is
faster). The sanity columns compare each peer's REML criterion and fixed effects
with hlm_jax's: Δobj = peer − hlm_jax, max|Δβ|/se in units of hlm_jax's standard
errors. A peer that is not installed is skipped with a note.
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
import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class Case:
    name: str
    dataset: str
    formula: str  # lme4 syntax (hlm_jax, lme4, mixedlm)
    fixed: str  # statsmodels / mixedlm-rs fixed part
    group: str
    re_formula: str
    r_factors: tuple[str, ...]  # columns R must read as factors
    r_inner: int  # lme4 fits per system.time block (timer resolution is 1 ms)


CASES = {
    c.name: c for c in [
        Case("sleepstudy_rs_reml", "sleepstudy", "Reaction ~ Days + (Days | Subject)", "Reaction ~ Days",
             "Subject", "~Days", ("Subject",), 20),
        Case("hsb_full_reml", "hsb", "mathach ~ ses * sector + (ses | school)", "mathach ~ ses * sector",
             "school", "~ses", ("school", "sector"), 3),
    ]
}


@dataclass
class Result:
    package: str
    times: list[float] | None = None
    objective: float = np.nan
    fixef: pd.Series | None = None
    note: str = ""
    se: pd.Series | None = None


@dataclass
class Runner:
    """One package on one case: `fit()` fits once; `read(out)` turns its output into a Result."""

    package: str
    fit: object
    read: object
    every: int = 1  # time it only every `every` rounds (slow packages)


# ---- the Python packages ----------------------------------------------------------------------
def hlm_jax_runners(case: Case, data: pd.DataFrame) -> list[Runner]:
    import hlm_jax as hj
    from hlm_jax.design import build_design
    try:
        from hlm_jax.results import fit_design  # internal: the fit from a built design
    except ImportError:
        fit_design = None

    def read(m):
        note = m.opt.message + (", singular" if m.singular else "")
        return Result("hlm_jax", objective=m.objective, fixef=m.fixef, se=m.std_errors, note=note)

    def read_prebuilt(m):
        r = read(m)
        r.package, r.note = "  (design prebuilt)", "hlm_jax without formula/design building"
        return r

    runners = [Runner("hlm_jax", lambda: hj.lmer(case.formula, data, REML=True), read)]
    if fit_design is not None:
        design = build_design(case.formula, data)
        runners.append(Runner("  (design prebuilt)", lambda: fit_design(design, REML=True), read_prebuilt))
    return runners


def statsmodels_runner(case: Case, data: pd.DataFrame) -> Runner | Result:
    try:
        import statsmodels.formula.api as smf
    except ImportError:
        return Result("statsmodels", note="not installed (pip install statsmodels)")

    def fit():
        return smf.mixedlm(case.fixed, data, groups=data[case.group], re_formula=case.re_formula).fit(reml=True)

    def read(r):
        return Result("statsmodels", objective=-2.0 * r.llf, fixef=pd.Series(r.fe_params),
                      note="" if r.converged else "not converged")

    return Runner("statsmodels", fit, read, every=2)


def mixedlm_runner(case: Case, data: pd.DataFrame) -> Runner | Result:
    try:
        import mixedlm
    except ImportError:
        return Result("mixedlm", note="not installed (pip install mixedlm)")

    def read(m):
        fixef = m.fixef() if callable(m.fixef) else m.fixef
        crit = m.REMLcrit() if callable(m.REMLcrit) else m.REMLcrit
        return Result("mixedlm", objective=float(crit), fixef=pd.Series(fixef, dtype=float))

    return Runner("mixedlm", lambda: mixedlm.lmer(case.formula, data, REML=True), read)


def mixedlm_rs_runner(case: Case, data: pd.DataFrame) -> Runner | Result:
    try:
        import mixedlm_rs
    except ImportError:
        return Result("mixedlm-rs", note="not installed (pip install mixedlm-rs)")

    def fit():
        return mixedlm_rs.mixedlm(case.fixed, data, groups=case.group, re_formula=case.re_formula).fit(reml=True)

    def read(r):
        return Result("mixedlm-rs", objective=-2.0 * r.llf, fixef=pd.Series(r.fe_params_labelled, dtype=float),
                      note="" if r.converged else "not converged")

    return Runner("mixedlm-rs", fit, read)


def time_round_robin(runners: list[Runner], repeat: int) -> list[Result]:
    """One warm-up fit each, then `repeat` rounds of one timed fit per package, interleaved so
    that load from other processes on the machine falls on all packages alike; min per package."""
    results, times = [], [[] for _ in runners]
    for r in runners:
        results.append(r.read(r.fit()))
    for i in range(repeat):
        for r, ts in zip(runners, times):
            if i % r.every == 0:
                t0 = time.perf_counter()
                r.fit()
                ts.append(time.perf_counter() - t0)
    for res, ts in zip(results, times):
        res.times = ts
    return results


R_SCRIPT = r"""
suppressMessages(library(lme4))
args <- commandArgs(trailingOnly = TRUE)
d <- read.csv(args[1])
for (col in strsplit(args[3], ",")[[1]]) d[[col]] <- factor(d[[col]])
f <- as.formula(args[2])
inner <- as.integer(args[4])
m <- lmer(f, d, REML = TRUE)  # warm-up
ts <- replicate(5, system.time(for (i in seq_len(inner)) lmer(f, d, REML = TRUE))[["elapsed"]] / inner)
fe <- fixef(m)
cat("RESULT", sprintf("{\"times\": [%s], \"objective\": %.10f, \"names\": [%s], \"fixef\": [%s]}",
    paste(sprintf("%.6f", ts), collapse = ","), REMLcrit(m),
    paste(sprintf("\"%s\"", names(fe)), collapse = ","), paste(sprintf("%.12g", fe), collapse = ",")), "\n")
"""


def lme4_available() -> bool:
    if shutil.which("Rscript") is None:
        return False
    probe = subprocess.run(["Rscript", "-e", "quit(status = !requireNamespace('lme4', quietly = TRUE))"],
                           capture_output=True)
    return probe.returncode == 0


def run_lme4(case: Case, data: pd.DataFrame) -> Result:
    if not lme4_available():
        return Result("lme4", note="skipped: Rscript with lme4 not found")
    with tempfile.TemporaryDirectory() as tmp:
        csv, script = os.path.join(tmp, "data.csv"), os.path.join(tmp, "bench.R")
        data.to_csv(csv, index=False)
        with open(script, "w") as fh:
            fh.write(R_SCRIPT)
        proc = subprocess.run(["Rscript", script, csv, case.formula, ",".join(case.r_factors), str(case.r_inner)],
                              capture_output=True, text=True)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
    if line is None:
        return Result("lme4", note=f"R failed: {proc.stderr.strip()[-200:]}")
    out = json.loads(line[len("RESULT "):])
    return Result("lme4", out["times"], out["objective"], pd.Series(out["fixef"], index=out["names"]),
                  f"R system.time, {case.r_inner} fits per block")


# ---- comparing -------------------------------------------------------------------------------
def _norm(name: str) -> str:
    """A coefficient name in a form the packages share: '(Intercept)'/'Intercept' → 'intercept',
    'sector[T.Public]' → 'sectorpublic', interaction parts sorted."""
    parts = []
    for part in str(name).split(":"):
        part = part.replace("[T.", "").replace("[", "").replace("]", "").replace("(", "").replace(")", "")
        parts.append(part.lower())
    return ":".join(sorted(parts))


def max_beta_gap(ours: pd.Series, se: pd.Series, theirs: pd.Series) -> float:
    """max |β_peer − β_ours| / se_ours, matching coefficients by name, else by the closest
    permutation (some packages name factor levels by position)."""
    mine = {_norm(k): (v, s) for (k, v), s in zip(ours.items(), se.to_numpy())}
    other = {_norm(k): v for k, v in theirs.items()}
    if set(mine) == set(other):
        return max(abs(other[k] - v) / s for k, (v, s) in mine.items())
    if len(theirs) != len(ours):
        return np.inf
    from scipy.optimize import linear_sum_assignment
    a, b = ours.to_numpy(), theirs.to_numpy(dtype=float)
    cost = np.abs(a[:, None] - b[None, :]) / se.to_numpy()[:, None]
    rows, cols = linear_sum_assignment(cost)
    return float(cost[rows, cols].max())


def run_case(case: Case, repeat: int) -> list[Result]:
    import hlm_jax as hj
    data = hj.datasets.load(case.dataset)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # singular-fit and convergence chatter; the table says it
        runners = hlm_jax_runners(case, data)
        skipped = []
        for make in (statsmodels_runner, mixedlm_runner, mixedlm_rs_runner):
            r = make(case, data)
            (runners if isinstance(r, Runner) else skipped).append(r)
        results = time_round_robin(runners, repeat)
    lme4 = run_lme4(case, data)
    n_ours = sum(r.package.startswith(("hlm_jax", " ")) for r in results)
    return results[:n_ours] + [lme4] + results[n_ours:] + skipped


def print_table(case: Case, results: list[Result]) -> None:
    ours = results[0]
    base = min(ours.times)
    print(f"\n{case.name}: {case.formula}  (REML; warm fit, min of runs after a warm-up)")
    header = f"{'package':<19} {'min ms':>9} {'median ms':>10} {'peer/hlm_jax':>13} {'Δobj':>10} {'max|Δβ|/se':>11}  note"
    print(header)
    print("-" * len(header))
    for r in results:
        if r.times is None:
            print(f"{r.package:<19} {'—':>9} {'—':>10} {'—':>13} {'—':>10} {'—':>11}  {r.note}")
            continue
        t_min, t_med = 1e3 * min(r.times), 1e3 * float(np.median(r.times))
        ratio = min(r.times) / base
        dobj = r.objective - ours.objective
        gap = 0.0 if r is ours else max_beta_gap(ours.fixef, ours.se, r.fixef)
        ratio_txt = "" if r.package.startswith(("hlm_jax", " ")) else f"{ratio:>12.2f}x"
        print(f"{r.package:<19} {t_min:>9.2f} {t_med:>10.2f} {ratio_txt:>13} {dobj:>10.2e} {gap:>11.1e}  {r.note}")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=7, help="timed fits per package after the warm-up")
    ap.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    args = ap.parse_args(argv)
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPU cores")
    for name in args.cases:
        case = CASES[name]
        print_table(case, run_case(case, args.repeat))


if __name__ == "__main__":
    main()
