"""Batched programs across processes and hosts, on JAX's own multi-process runtime (`jax.distributed`).

Every process runs the same Python program. After `initialize`, `jax.devices()` lists the devices of
all processes, so the batch mesh spans them; each process computes the problems on its own devices
and `gather` hands every process the whole result. Replicate i's random key is fold_in(seed, i), so
one process and N processes give the same replicates.
"""
from __future__ import annotations

import jax
import numpy as np
from jax.experimental import multihost_utils


def initialize(coordinator: str, num_processes: int, process_id: int) -> None:
    """Join a run of `num_processes` processes coordinated by process 0 at `coordinator` (HOST:PORT).

    Call it once, first, in every process (before any JAX computation)."""
    if num_processes < 1 or not 0 <= process_id < num_processes:
        raise ValueError(f"process id must lie in [0, {num_processes}), got {process_id}")
    jax.distributed.initialize(coordinator, num_processes=num_processes, process_id=process_id)


def gather(tree):
    """A pytree of (possibly process-spanning) arrays as numpy arrays holding every process's part."""
    if jax.process_count() == 1:
        return jax.tree_util.tree_map(np.asarray, tree)
    return jax.tree_util.tree_map(np.asarray, multihost_utils.process_allgather(tree, tiled=True))


def agree_min(value: int) -> int:
    """The smallest of the processes' values (e.g. a chunk size from each host's free memory), so every
    process runs the same program on the same chunks."""
    if jax.process_count() == 1:
        return value
    return int(np.min(multihost_utils.process_allgather(np.asarray([value], np.int64))))


def is_main() -> bool:
    """Whether this is process 0 (the one that writes files and shows progress)."""
    return jax.process_index() == 0
