"""One command for the benchmark report: hlm_jax side by side with lme4, statsmodels, mixedlm and mixedlm-rs.

    python benchmarks/run_all.py [--repeat 10] [--batch] [--insteval] [--no-write]

Runs `bench_core.py`'s cases (warm single fits of every package from the same DataFrame; lme4 through
Rscript when it is installed), prints one table with each peer's time ratio (peer / hlm_jax, > 1: hlm_jax
is faster) and its accuracy against hlm_jax (Δ criterion = peer's REML criterion − hlm_jax's; max|Δβ|/se in
hlm_jax's standard errors), and writes benchmarks/RESULTS.md with the date, the machine, its load and the
package versions; the table between the README's benchmark markers is replaced by the new one. `--batch`
and `--insteval` also run bench_batch.py and bench_insteval.py (minutes each) and add their output.
"""
from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import os
import platform
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import bench_core  # noqa: E402

README_START, README_END = "<!-- benchmark-table:start -->", "<!-- benchmark-table:end -->"
PACKAGES = ["jax", "jaxlib", "numpy", "pandas", "scipy", "formulaic", "statsmodels", "mixedlm", "mixedlm-rs"]


def versions() -> dict[str, str]:
    """Installed versions of hlm_jax's dependencies and peers, and of R and lme4 when present."""
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "not installed"
    if shutil.which("Rscript"):
        probe = subprocess.run(["Rscript", "-e", "cat(R.version$major, R.version$minor, "
                                "if (requireNamespace('lme4', quietly = TRUE)) as.character(packageVersion('lme4')) else 'none')"],
                               capture_output=True, text=True)
        parts = probe.stdout.split()
        if len(parts) == 3:
            out["R"], out["lme4"] = f"{parts[0]}.{parts[1]}", parts[2]
    return out


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        model = next(ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name"))
        cpu = model
    except (OSError, StopIteration):
        pass
    memory = ""
    try:
        kb = int(next(ln.split()[1] for ln in open("/proc/meminfo") if ln.startswith("MemTotal")))
        memory = f", {kb / 2**20:.0f} GiB memory"
    except (OSError, StopIteration):
        pass
    return f"{cpu}, {os.cpu_count()} cores{memory}, {platform.system()} {platform.release()}"


def load() -> str:
    try:
        return " / ".join(f"{x:.1f}" for x in os.getloadavg())
    except OSError:
        return "unknown"


def rows_of(case, results) -> list[dict]:
    """One row per package: times, ratio to hlm_jax and accuracy against hlm_jax."""
    ours = results[0]
    base = min(ours.times)
    rows = []
    for r in results:
        row = {"case": case.name, "package": r.package.strip(), "note": r.note}
        if r.times is not None:
            mine = r is ours or r.package.startswith(" ")
            row.update(min_ms=1e3 * min(r.times), median_ms=1e3 * float(np.median(r.times)),
                       ratio=np.nan if mine else min(r.times) / base, dobj=r.objective - ours.objective,
                       gap=0.0 if r is ours else bench_core.max_beta_gap(ours.fixef, ours.se, r.fixef))
        rows.append(row)
    return rows


def markdown(rows: list[dict]) -> str:
    lines = ["| case | package | min ms | median ms | peer/hlm_jax | Δ criterion | max\\|Δβ\\|/se | note |",
             "|---|---|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        if "min_ms" not in r:
            lines.append(f"| {r['case']} | {r['package']} | — | — | — | — | — | {r['note']} |")
            continue
        ratio = "" if np.isnan(r["ratio"]) else f"{r['ratio']:.2f}×"
        name = f"**{r['package']}**" if r["package"] == "hlm_jax" else r["package"]
        lines.append(f"| {r['case']} | {name} | {r['min_ms']:.2f} | {r['median_ms']:.2f} | {ratio} | "
                     f"{r['dobj']:.1e} | {r['gap']:.1e} | {r['note']} |")
    return "\n".join(lines)


def run_script(name: str, *args: str) -> str:
    """Another benchmark script's printed output (it prints its own side-by-side table)."""
    done = subprocess.run([sys.executable, str(HERE / name), *args], capture_output=True, text=True)
    return done.stdout + (f"\n(stderr tail)\n{done.stderr[-1500:]}" if done.returncode else "")


def report(table: str, extra: dict[str, str], started: str, load_before: str, load_after: str) -> str:
    v = versions()
    lines = [
        "# Benchmark results", "",
        f"Made by `python benchmarks/run_all.py` on {started} (UTC).", "",
        f"- **Machine**: {machine()}; no accelerator used (JAX backend: CPU).",
        f"- **Load average** (1 / 5 / 15 min) before: {load_before}; after: {load_after}. The machine is shared: "
        "times are minima over interleaved runs, and medians are noisy.",
        "- **Versions**: " + ", ".join(f"{k} {val}" for k, val in v.items()) + ".", "",
        "## Warm single fits (formula + DataFrame → fitted model)", "",
        "Each package fits the same rows; Python packages round-robin, one fit each per round, after a warm-up fit; "
        "lme4 inside R (`system.time` over blocks of fits, min of 5 blocks). `peer/hlm_jax` > 1: hlm_jax is faster. "
        "Δ criterion: the peer's REML criterion − hlm_jax's (negative: the peer found a better optimum); "
        "max|Δβ|/se: the largest fixed-effect difference in hlm_jax's standard errors. "
        "`(design prebuilt)`: hlm_jax's fit alone, without parsing the formula and building the design.", "",
        table, ""]
    for title, text in extra.items():
        lines += [f"## {title}", "", "```", text.strip(), "```", ""]
    return "\n".join(lines)


def update_readme(table: str, started: str) -> None:
    path = HERE.parent / "README.md"
    text = path.read_text()
    if README_START not in text:
        return
    block = f"{README_START}\nMeasured {started} UTC (see benchmarks/RESULTS.md for the machine and versions):\n\n{table}\n{README_END}"
    path.write_text(re.sub(re.escape(README_START) + ".*?" + re.escape(README_END), lambda _: block, text, flags=re.S))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=10, help="timed fits per package after the warm-up")
    parser.add_argument("--cases", nargs="+", default=list(bench_core.CASES), choices=list(bench_core.CASES))
    parser.add_argument("--batch", action="store_true", help="also run bench_batch.py (bootstrap, pb_test, lmlist)")
    parser.add_argument("--insteval", action="store_true", help="also run bench_insteval.py (crossed, 73k rows)")
    parser.add_argument("--no-write", action="store_true", help="print only; leave RESULTS.md and README as they are")
    args = parser.parse_args(argv)
    started = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M")
    load_before = load()
    rows = []
    for name in args.cases:
        case = bench_core.CASES[name]
        results = bench_core.run_case(case, args.repeat)
        bench_core.print_table(case, results)
        rows += rows_of(case, results)
    extra = {}
    if args.batch:
        extra["Batched fitting (bench_batch.py)"] = run_script("bench_batch.py")
    if args.insteval:
        extra["InstEval, crossed random effects (bench_insteval.py)"] = run_script("bench_insteval.py")
    table = markdown(rows)
    print("\n" + table)
    if not args.no_write:
        (HERE / "RESULTS.md").write_text(report(table, extra, started, load_before, load()))
        update_readme(table, started)
        print(f"\nwrote {HERE / 'RESULTS.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
