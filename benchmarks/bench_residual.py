"""Residual structures (issue 16) side by side with nlme's lme, in the same run.

    python benchmarks/bench_residual.py            # Orthodont models and the 10,000 × 10 AR(1) panel
    python benchmarks/bench_residual.py --small    # a 1,000 × 10 panel instead

"warm" is the median of 20 lmer calls (3 for the panel) after the first on the same DataFrame (the compiled program and
the design are reused: `residual_fit.DESIGNS`); "new y" is the median of as many calls on copies whose
response differs, so the design is built again and only the compiled program is reused; "compile" is
the first call minus the warm time (the persistent compilation cache is off for this script). nlme
times are the median of 20 `lme` calls after a warm-up (one call for the large panel). Ratios are
nlme / hlm_jax (>1: hlm_jax is faster).
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


def panel(subjects: int, times: int = 10, phi: float = 0.5, seed: int = 0) -> pd.DataFrame:
    """y = 1 + 0.3 t + 0.5 x + b + e: b ~ N(0, 1), e an AR(1) series (Phi = phi, sd 1) per subject."""
    rng = np.random.default_rng(seed)
    e = np.zeros((subjects, times))
    e[:, 0] = rng.normal(size=subjects)
    for t in range(1, times):
        e[:, t] = phi * e[:, t - 1] + np.sqrt(1 - phi ** 2) * rng.normal(size=subjects)
    t = np.tile(np.arange(times), subjects)
    x = rng.normal(size=subjects * times)
    b = np.repeat(rng.normal(size=subjects), times)
    y = 1 + 0.3 * t + 0.5 * x + b + e.ravel()
    return pd.DataFrame({"id": np.repeat([f"s{i:05d}" for i in range(subjects)], times), "t": t, "x": x, "y": y})


CASES = {
    "orthodont AR(1)": ("distance ~ age * Sex + (1|Subject)", dict(correlation=hj.AR1()),
                        "lme(distance ~ age * Sex, random = ~1|Subject, correlation = corAR1(form = ~1|Subject), data = d)"),
    "orthodont varIdent": ("distance ~ age * Sex + (1|Subject)", dict(weights=hj.VarIdent("Sex")),
                           "lme(distance ~ age * Sex, random = ~1|Subject, weights = varIdent(form = ~1|Sex), data = d)"),
    "panel AR(1)": ("y ~ t + x + (1|id)", dict(correlation=hj.AR1()),
                    "lme(y ~ t + x, random = ~1|id, correlation = corAR1(form = ~1|id), data = d)"),
}


def nlme_seconds(call: str, csv: str, repeats: int) -> tuple[float, float] | None:
    """The median of `repeats` lme calls after a warm-up, and its logLik; None without R."""
    if shutil.which("Rscript") is None:
        return None
    code = (f"suppressMessages(library(nlme)); d <- read.csv('{csv}', stringsAsFactors = TRUE)\n"
            f"m <- {call}\n"
            f"t <- median(sapply(seq_len({repeats}), function(i) system.time({call})[['elapsed']]))\n"
            "cat('seconds', t, '\\n'); cat('loglik', format(as.numeric(logLik(m)), digits = 15), '\\n')\n")
    with tempfile.NamedTemporaryFile("w", suffix=".R", delete=False) as fh:
        fh.write(code)
        path = fh.name
    try:
        out = subprocess.run(["Rscript", path], capture_output=True, text=True, timeout=3600)
    finally:
        os.unlink(path)
    if out.returncode != 0:
        print("R failed:", out.stderr[-400:])
        return None
    values = dict(line.split() for line in out.stdout.splitlines() if line.strip())
    return float(values["seconds"]), float(values["loglik"])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--small", action="store_true", help="a 1,000-subject panel instead of 10,000")
    args = parser.parse_args()
    subjects = 1000 if args.small else 10_000
    frames = {"orthodont AR(1)": hj.datasets.load("orthodont"), "orthodont varIdent": hj.datasets.load("orthodont"),
              "panel AR(1)": panel(subjects)}
    print(f"{'model':<22}{'rows':>8}{'compile':>9}{'warm':>9}{'new y':>9}{'nlme':>9}{'nlme/warm':>11}"
          f"{'nlme/new y':>12}{'|Δ logLik|':>12}")
    with tempfile.TemporaryDirectory() as tmp:
        for name, (formula, kw, call) in CASES.items():
            data = frames[name]
            repeats = 3 if name.startswith("panel") else REPEATS
            first, warm, model = timed(lambda: hj.lmer(formula, data, **kw), repeats)
            response = formula.split("~")[0].strip()
            copies = [data.assign(**{response: data[response] + 1e-9 * (i + 1)}) for i in range(repeats)]
            new_y = median_seconds([lambda c=c: hj.lmer(formula, c, **kw) for c in copies])
            csv = os.path.join(tmp, "data.csv")
            data.to_csv(csv, index=False)
            peer = nlme_seconds(call, csv, 1 if name.startswith("panel") else REPEATS)
            nlme_t, ratio, ratio_new, diff = ("n/a",) * 4 if peer is None else (
                f"{peer[0]:.4f}", f"{peer[0] / warm:.1f}x", f"{peer[0] / new_y:.1f}x",
                f"{abs(peer[1] - model.loglik):.1e}")
            print(f"{name:<22}{len(data):>8}{first - warm:>9.2f}{warm:>9.4f}{new_y:>9.4f}{nlme_t:>9}{ratio:>11}"
                  f"{ratio_new:>12}{diff:>12}", flush=True)


REPEATS = 20


def timed(fn, repeats: int) -> tuple[float, float, object]:
    """(first call, median of `repeats` later calls) in seconds, and the last result."""
    t0 = time.perf_counter()
    result = fn()
    first = time.perf_counter() - t0
    return first, median_seconds([fn] * repeats), result


def median_seconds(calls) -> float:
    """The median time of the calls."""
    seconds = []
    for call in calls:
        t0 = time.perf_counter()
        call()
        seconds.append(time.perf_counter() - t0)
    return float(np.median(seconds))


if __name__ == "__main__":
    main()
