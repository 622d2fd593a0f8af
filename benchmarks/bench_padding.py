"""Padding waste and fit time with very unequal (Zipf-distributed) group sizes.

    python benchmarks/bench_padding.py [--groups 2000] [--rows 50000] [--alpha 1.1] [--repeat 3]

Group sizes follow a rank-size (Zipf) law, size_k ∝ k^-alpha, at least 2 rows:
with the defaults a few groups have thousands of rows and hundreds have two or
three. The data are simulated from y = 1 + 0.5 x + b0_g + b1_g x + ε and fitted
with `y ~ x + (x | g)`.

It prints padded cells per real row (`hlm_jax.design.padding_waste`) for the
bucketed design (groups padded to power-of-two lengths, one tensor per length)
next to a single padded tensor (largest group size × number of groups), then the
first fit (compile included) and warm fit times. The waste must stay below 2×;
the script exits with status 1 if it does not, for the main case or for any case
of the sweep over other exponents and random Zipf draws.
"""
from __future__ import annotations

import argparse
import sys
import time
import warnings

import numpy as np
import pandas as pd

import hlm_jax as hj
from hlm_jax.design import build_design, padding_waste

FORMULA = "y ~ x + (x | g)"
BOUND = 2.0


def zipf_sizes(groups: int, rows: int, alpha: float) -> np.ndarray:
    """Deterministic rank-size group sizes summing to about `rows`, each at least 2."""
    base = np.arange(1, groups + 1, dtype=float) ** -alpha
    return np.maximum(2, np.round(rows * base / base.sum())).astype(int)


def random_zipf_sizes(groups: int, a: float, seed: int, cap: int = 20000) -> np.ndarray:
    """Sizes drawn from numpy's Zipf distribution (shifted to at least 2, capped)."""
    return np.minimum(np.random.default_rng(seed).zipf(a, groups) + 1, cap)


def simulate(sizes: np.ndarray, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    g = np.repeat(np.arange(len(sizes)), sizes)
    rng.shuffle(g)  # rows of a group need not be adjacent
    x = rng.normal(size=g.size)
    b0 = rng.normal(0.0, 1.0, len(sizes))
    b1 = rng.normal(0.0, 0.5, len(sizes))
    y = 1.0 + 0.5 * x + b0[g] + b1[g] * x + rng.normal(size=g.size)
    return pd.DataFrame({"y": y, "x": x, "g": pd.Categorical([f"g{i:05d}" for i in g])})


def waste(sizes: np.ndarray, seed: int = 0) -> tuple[float, float, int]:
    """(bucketed waste, single-tensor waste, number of buckets) for these group sizes."""
    design = build_design(FORMULA, simulate(sizes, seed))
    single = len(sizes) * sizes.max() / sizes.sum()
    return padding_waste(design), single, len(design.buckets)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--groups", type=int, default=2000)
    ap.add_argument("--rows", type=int, default=50000)
    ap.add_argument("--alpha", type=float, default=1.1)
    ap.add_argument("--repeat", type=int, default=5, help="warm fits (and design builds) timed after the first")
    args = ap.parse_args(argv)

    sizes = zipf_sizes(args.groups, args.rows, args.alpha)
    data = simulate(sizes)
    q = np.quantile(sizes, [0.5, 0.9, 0.99])
    print(f"{len(sizes)} groups, {sizes.sum()} rows, Zipf exponent {args.alpha}: largest {sizes.max()}, "
          f"median {q[0]:.0f}, 90% {q[1]:.0f}, 99% {q[2]:.0f}; {np.sum(sizes >= 1000)} groups ≥ 1000 rows, "
          f"{np.sum(sizes <= 3)} groups ≤ 3 rows")

    design = build_design(FORMULA, data)
    t_design = []
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        build_design(FORMULA, data)
        t_design.append(time.perf_counter() - t0)
    bucketed = padding_waste(design)
    single = len(sizes) * sizes.max() / sizes.sum()
    print("\npadded cells per real row")
    print(f"  bucketed (power-of-two lengths, {len(design.buckets)} buckets): {bucketed:6.2f}x")
    print(f"  single padded tensor ({len(sizes)} x {sizes.max()}):            {single:6.1f}x")
    print("  buckets: " + ", ".join(f"{b.mask.shape[0]}x{b.mask.shape[1]}" for b in design.buckets))

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t0 = time.perf_counter()
        m = hj.lmer(FORMULA, data)
        first = time.perf_counter() - t0
        times = []
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            m = hj.lmer(FORMULA, data)
            times.append(time.perf_counter() - t0)
    print(f"\nfit {FORMULA} (REML): first {first:.2f} s (compile included), warm {min(times) * 1e3:.0f} ms "
          f"(min of {args.repeat}; design building alone {min(t_design) * 1e3:.0f} ms)")
    print(f"  {m.opt}")
    print(f"  fixef {np.round(m.fixef.to_numpy(), 4).tolist()}, theta {np.round(m.theta, 4).tolist()}, "
          f"sigma {m.sigma:.4f}")

    print("\nsweep: bucketed waste (single-tensor waste) for other size distributions")
    worst = bucketed
    for alpha in (0.8, 1.0, 1.2, 1.5, 2.0):
        b, s, nb = waste(zipf_sizes(args.groups, args.rows, alpha))
        worst = max(worst, b)
        print(f"  rank-size alpha {alpha:3.1f}: {b:5.2f}x ({s:7.1f}x), {nb} buckets")
    for seed in range(4):
        sz = random_zipf_sizes(args.groups, 1.6, seed)
        b, s, nb = waste(sz, seed)
        worst = max(worst, b)
        print(f"  numpy zipf(1.6) seed {seed}: {b:5.2f}x ({s:7.1f}x), {sz.sum()} rows, largest {sz.max()}, {nb} buckets")
    ok = worst < BOUND
    print(f"\nworst bucketed waste {worst:.2f}x: {'within' if ok else 'ABOVE'} the {BOUND:.0f}x bound")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
