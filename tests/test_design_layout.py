"""The padded per-group layout of a design, checked against its definition row by row: each group's rows in
one slot of the bucket of its padded length, in data order, every row exactly once, padding cells zero."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from hlm_jax.design import build_design, padded_length


@pytest.mark.parametrize("seed", range(4))
def test_buckets_hold_each_group_in_its_slot(seed):
    rng = np.random.default_rng(seed)
    n_groups = [7, 40, 150, 300][seed]
    sizes = np.maximum(1, rng.zipf(1.6, n_groups) % 90)
    g = rng.permutation(np.repeat(np.arange(n_groups), sizes))
    n = len(g)
    data = pd.DataFrame({"y": rng.normal(size=n), "x": rng.normal(size=n), "g": g * 3 + 1})
    design = build_design("y ~ x + (x | g)", data)
    info = design.info
    seen = np.zeros(n, dtype=int)
    lengths = [b.mask.shape[1] for b in design.buckets]
    assert lengths == sorted(set(lengths))
    for b in design.buckets:
        length = b.mask.shape[1]
        groups = b.group[b.group < info.n_groups]
        assert list(groups) == sorted(groups) and b.mask.shape[0] == padded_length(len(groups))
        assert np.all(b.group[len(groups):] == info.n_groups) and not b.mask[len(groups):].any()
        for slot, k in enumerate(groups):
            rows = np.flatnonzero(info.group_codes == k)
            assert padded_length(len(rows)) == length
            np.testing.assert_array_equal(b.rows[slot, :len(rows)], rows)  # data order within the group
            np.testing.assert_array_equal(b.mask[slot], np.arange(length) < len(rows))
            seen[rows] += 1
        real = b.mask.astype(bool)
        np.testing.assert_array_equal(b.X[real], info.X[b.rows[real]])
        np.testing.assert_array_equal(b.Z[real], info.Z[b.rows[real]])
        np.testing.assert_array_equal(b.y[real], info.y[b.rows[real]])
        assert not b.X[~real].any() and not b.Z[~real].any() and not b.y[~real].any() and not b.rows[~real].any()
    np.testing.assert_array_equal(seen, 1)
    assert list(info.levels) == [str(3 * k + 1) for k in range(n_groups)]
