"""Command line: `python -m hlm_jax fit "Reaction ~ Days + (Days | Subject)" --dataset sleepstudy`."""
from __future__ import annotations

import argparse
import sys
import time

import pandas as pd


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m hlm_jax", description="Fit mixed models in lme4 syntax.")
    sub = parser.add_subparsers(dest="command", required=True)
    fit = sub.add_parser("fit", help="fit a linear mixed model and print its summary")
    fit.add_argument("formula", help='lme4 formula, e.g. "Reaction ~ Days + (Days | Subject)"')
    source = fit.add_mutually_exclusive_group(required=True)
    source.add_argument("--dataset", help="an embedded dataset (sleepstudy, dyestuff, dyestuff2, hsb, ...)")
    source.add_argument("--data", help="a CSV file")
    fit.add_argument("--ml", action="store_true", help="maximum likelihood instead of REML")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    import hlm_jax as hj

    data = hj.datasets.load(args.dataset) if args.dataset else pd.read_csv(args.data)
    start = time.perf_counter()
    try:
        model = hj.lmer(args.formula, data, REML=not args.ml)
    except (hj.FormulaError, hj.DesignError, hj.NotYetSupportedError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(model.summary())
    print(f"fitted in {time.perf_counter() - start:.3f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
