"""The command line (`python -m hlm_jax ...` or `hlm-jax ...`): fit, bootstrap and list datasets.

    python -m hlm_jax fit "Reaction ~ Days + (Days | Subject)" --dataset sleepstudy --format json
    python -m hlm_jax fit "y ~ x + (1 | g)" --data my.csv --ddf satterthwaite --confint profile --ranef re.csv
    python -m hlm_jax bootstrap "Reaction ~ Days + (Days | Subject)" --dataset sleepstudy --n 1000 --seed 1 --out reps.csv
    python -m hlm_jax bootstrap "..." --dataset sleepstudy --n 10000 --coordinator host0:1234 --num-processes 2 --process-id 0
    python -m hlm_jax datasets

Results go to stdout (text, JSON or CSV), timing and warnings to stderr, one line each. Any error is
one line on stderr ("error: ...") and exit code 2; nothing is printed as a traceback.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
import warnings

import numpy as np
import pandas as pd

import hlm_jax as hj
from hlm_jax import distributed

EXIT_ERROR = 2


class UsageError(Exception):
    """A command line that cannot be run (bad option, missing file, unknown dataset)."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line instead of argparse's usage block
        raise UsageError(message)


def parser() -> argparse.ArgumentParser:
    """The argument parser of all subcommands."""
    top = _Parser(prog="python -m hlm_jax", description="Fit linear mixed models written in lme4's syntax.")
    sub = top.add_subparsers(dest="command", required=True, parser_class=_Parser)
    fit = sub.add_parser("fit", help="fit a model; print its summary (text) or its estimates (json, csv)")
    _model_arguments(fit)
    fit.add_argument("--format", choices=["text", "json", "csv"], default="text", help="output format")
    fit.add_argument("--ddf", choices=["satterthwaite", "kenward-roger"], help="df and p values of the fixed effects")
    fit.add_argument("--confint", choices=["profile", "wald", "boot"], help="confidence intervals by this method")
    fit.add_argument("--level", type=float, default=0.95, help="confidence level (default 0.95)")
    fit.add_argument("--ranef", metavar="FILE", help="write the conditional modes and sds as CSV to FILE")
    boot = sub.add_parser("bootstrap", help="parametric bootstrap; writes the replicates as CSV")
    _model_arguments(boot)
    boot.add_argument("--n", type=int, default=1000, help="number of replicates (default 1000)")
    boot.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    boot.add_argument("--out", metavar="FILE", required=True, help="CSV file for the replicates ('-': stdout)")
    boot.add_argument("--level", type=float, default=0.95, help="level of the percentile intervals printed")
    boot.add_argument("--no-progress", action="store_true", help="no progress bar")
    boot.add_argument("--coordinator", metavar="HOST:PORT", help="run across processes: process 0's address")
    boot.add_argument("--num-processes", type=int, default=1, help="processes in the run (with --coordinator)")
    boot.add_argument("--process-id", type=int, default=0, help="this process's index, 0 to N-1 (process 0 writes)")
    listing = sub.add_parser("datasets", help="list the embedded datasets")
    listing.add_argument("--format", choices=["text", "json"], default="text")
    return top


def _model_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("formula", help='lme4 formula, e.g. "Reaction ~ Days + (Days | Subject)"')
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--dataset", help="an embedded dataset (see `python -m hlm_jax datasets`)")
    source.add_argument("--data", help="a CSV file")
    p.add_argument("--ml", action="store_true", help="maximum likelihood instead of REML")


def read_data(args) -> pd.DataFrame:
    """The data named on the command line; UsageError for a missing or unreadable file or unknown name."""
    if args.dataset:
        if args.dataset.lower() not in hj.datasets.names():
            raise UsageError(f"unknown dataset {args.dataset!r}; available: {', '.join(hj.datasets.names())}")
        return hj.datasets.load(args.dataset)
    try:
        frame = pd.read_csv(args.data)
    except FileNotFoundError:
        raise UsageError(f"no such file: {args.data}") from None
    except (OSError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise UsageError(f"cannot read {args.data} as CSV: {_one_line(exc)}") from None
    if frame.shape[1] < 2:
        raise UsageError(f"{args.data} has {frame.shape[1]} column(s): not a CSV table of a model's variables")
    return frame


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


def _finite(value):
    """JSON has no NaN or infinity: they become null."""
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value


def _records(frame: pd.DataFrame) -> list[dict]:
    return [{k: _finite(v) for k, v in row.items()} for row in frame.to_dict(orient="records")]


def fit_statistics(model) -> dict:
    """Criterion, likelihood, information criteria and sizes of a fit."""
    return {"REML": model.reml, "objective": model.objective, "logLik": model.loglik, "AIC": model.aic,
            "BIC": model.bic, "sigma": model.sigma, "nobs": model.nobs, "df_residual": model.nobs - model.n_params,
            "ngroups": model.ngroups, "converged": model.converged, "singular": model.singular}


def fit_result(model, ddf: str | None, intervals: pd.DataFrame | None) -> dict:
    """Everything `fit --format json` writes: fixed effects, variance components, fit statistics, θ."""
    out = {"formula": model.formula, "fixef": _records(model.tidy("fixed", ddf=ddf)),
           "ran_pars": _records(model.tidy("ran_pars")), "varcorr": _records(model.varcorr),
           "theta": [float(t) for t in model.theta], "fit": {k: _finite(v) for k, v in fit_statistics(model).items()}}
    if intervals is not None:
        out["confint"] = _records(intervals.rename_axis("parameter").reset_index())
    return out


def fit_table(model, ddf: str | None, intervals: pd.DataFrame | None) -> pd.DataFrame:
    """`fit --format csv`: broom.mixed-style rows (fixed, ran_pars) then one row per fit statistic."""
    fixed = model.tidy("fixed", ddf=ddf)
    pars = model.tidy("ran_pars")
    if intervals is not None:
        names = model.varcorr_names() + ["sigma"]
        fixed = fixed.join(intervals[["lower", "upper"]], on="term")
        pars = pars.assign(lower=intervals.reindex(names)["lower"].to_numpy(),
                           upper=intervals.reindex(names)["upper"].to_numpy())
    stats = {k: v for k, v in fit_statistics(model).items() if k != "ngroups"}
    fit = pd.DataFrame({"effect": "fit", "term": list(stats), "estimate": [float(v) for v in stats.values()]})
    table = pd.concat([fixed, pars, fit], ignore_index=True)
    first = ["effect", "group", "term", "estimate"]
    return table[first + [c for c in table.columns if c not in first]]


def run_fit(args) -> None:
    """`fit`: the summary (text), or fixed effects, variance components and fit statistics (json, csv)."""
    data = read_data(args)
    start = time.perf_counter()
    model = hj.lmer(args.formula, data, REML=not args.ml)
    _timing("fitted", start)
    intervals = None
    if args.confint:
        start = time.perf_counter()
        intervals = model.confint(method=args.confint, level=args.level)
        _timing(f"{args.confint} intervals", start)
    if args.ranef:
        model.tidy("ran_vals").to_csv(args.ranef, index=False)
    if args.format == "json":
        print(json.dumps(fit_result(model, args.ddf, intervals), indent=1))
    elif args.format == "csv":
        sys.stdout.write(fit_table(model, args.ddf, intervals).to_csv(index=False))
    else:
        print(model.summary(ddf=args.ddf, stars=bool(args.ddf)))
        if intervals is not None:
            print(f"Confidence intervals ({args.confint}, {args.level:.0%}):\n{intervals.to_string()}")


def run_bootstrap(args) -> None:
    """`bootstrap`: the replicates as CSV (one row each, with its convergence flag), intervals on stdout."""
    if args.n < 1:
        raise UsageError(f"--n must be at least 1, got {args.n}")
    if args.coordinator:
        distributed.initialize(args.coordinator, args.num_processes, args.process_id)
    data = read_data(args)
    start = time.perf_counter()
    model = hj.lmer(args.formula, data, REML=not args.ml)
    _timing("fitted", start)
    start = time.perf_counter()
    result = model.bootstrap(n=args.n, seed=args.seed, progress=False if args.no_progress else None)
    _timing(f"{args.n} bootstrap replicates", start)
    if not distributed.is_main():
        return
    table = result.replicates.assign(converged=result.converged)
    table.index.name = "replicate"
    if args.out == "-":
        sys.stdout.write(table.to_csv())
    else:
        table.to_csv(args.out)
        print(f"Percentile intervals ({args.level:.0%}, {int(result.converged.sum())} converged replicates):\n"
              f"{result.confint(args.level).to_string()}")


def run_datasets(args) -> None:
    """`datasets`: each embedded dataset's name and description."""
    rows = [{"name": n, "description": hj.datasets.describe(n)} for n in hj.datasets.names()]
    if args.format == "json":
        print(json.dumps(rows, indent=1))
    else:
        width = max(len(r["name"]) for r in rows)
        print("\n".join(f"{r['name'].ljust(width)}  {r['description']}" for r in rows))


def _timing(what: str, start: float) -> None:
    print(f"{what} in {time.perf_counter() - start:.3f} s", file=sys.stderr)


def _warning_line(message, category, filename, lineno, file=None, line=None):
    """warnings.showwarning for the command line: one "warning: ..." line on stderr."""
    print(f"warning: {_one_line(message)}", file=sys.stderr)


COMMANDS = {"fit": run_fit, "bootstrap": run_bootstrap, "datasets": run_datasets}
EXPECTED = (UsageError, hj.FormulaError, hj.DesignError, hj.NotYetSupportedError, ValueError, KeyError, OSError)


def main(argv: list[str] | None = None) -> int:
    """Run one command; 0 on success, 2 (one line on stderr) on any error the user can fix."""
    try:
        args = parser().parse_args(argv)
        with warnings.catch_warnings():
            warnings.showwarning = _warning_line
            COMMANDS[args.command](args)
    except BrokenPipeError:  # `... | head`: the reader left; say nothing more
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except EXPECTED as exc:
        text = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"error: {_one_line(text)}", file=sys.stderr)
        return EXIT_ERROR
    return 0
