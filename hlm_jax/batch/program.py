"""The batched programs, chunk by chunk: simulated replicates or given statistics, sharded over devices."""
from __future__ import annotations

import time
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from ..distributed import gather
from ..fit import SINGLE_FIT_OPTIONS
from .devices import chunk_indices, chunk_size, mesh, progress_bar, slot_width
from .simulate import Simulator
from .targets import Target, fit_target


# The classic CPU emitters (as single fits) compile a batched program in 2/3 of the time and run it faster.
@partial(jax.jit, static_argnames=("width",), compiler_options=SINGLE_FIT_OPTIONS)
def simulated_chunk(simulator: Simulator, targets: tuple, key, idx, n_total, max_iter, width: int):
    """Replicates `idx` (< n_total are real): draw, form each target's statistics, fit. The idx axis
    is sharded over the devices; each runs its own queue."""

    def local(simulator, targets, key, idx, n_total, max_iter):
        keys = jax.vmap(jax.random.fold_in, (None, 0))(key, idx)
        draws = jax.vmap(simulator.draw)(keys)
        n_valid = jnp.sum(idx < n_total)
        out = []
        for t, target in enumerate(targets):
            data = jax.vmap(lambda d: simulator.statistics(d, t))(draws)
            data = jax.lax.optimization_barrier(data)  # keeps the draws out of the loop: compiles 2x faster
            out.append(fit_target(target, data, n_valid, width, max_iter))
        return tuple(out)

    rep, spec = PartitionSpec(), PartitionSpec("batch")
    return jax.shard_map(local, mesh=mesh(), in_specs=(rep, rep, rep, spec, rep, rep), out_specs=spec,
                         check_vma=False)(simulator, targets, key, idx, n_total, max_iter)


def bytes_per_problem(G: int, q: int, p: int, batched_design: bool = False) -> int:
    """Memory one queued problem holds: its statistics and results."""
    per_group = q * q + q * p + q if batched_design else q
    return 8 * (G * per_group + (p + 2) ** 2 + 64)


def run_simulated(simulator, targets, n, seed, chunk, progress, max_iter, desc, dims):
    """All n replicates, chunk by chunk; per-target dicts of numpy arrays (length n) and timings."""
    per_dev = chunk_size(n, bytes_per_problem(*dims), chunk)
    key = jax.random.PRNGKey(seed)
    sharding = NamedSharding(mesh(), PartitionSpec("batch"))
    merged = None
    t0 = time.perf_counter()
    first, n_chunks = 0, 0
    with progress_bar(n, progress, desc) as bar:
        while first < n:
            idx, size = chunk_indices(first, per_dev, n)
            out = simulated_chunk(simulator, targets, key, jax.device_put(idx, sharding), jnp.asarray(n, jnp.int32),
                                   jnp.asarray(max_iter, jnp.int32), width=slot_width())
            out = gather(out)
            if merged is None:
                merged = [{name: np.empty((n,) + v.shape[1:], v.dtype) for name, v in o.items()} for o in out]
            real = idx < n
            for m, o in zip(merged, out):
                for name, v in o.items():
                    m[name][idx[real]] = v[real]
            bar.update(int(real.sum()))
            first += size
            n_chunks += 1
    elapsed = time.perf_counter() - t0
    return merged, dict(seconds=elapsed, chunk=per_dev * len(jax.devices()), chunks=n_chunks,
                        devices=len(jax.devices()))


@partial(jax.jit, static_argnames=("width",), compiler_options=SINGLE_FIT_OPTIONS)
def given_chunk(target: Target, data, valid, max_iter, width: int):
    """Fit problems whose statistics are given (`data`: pytree, leading axis sharded over devices;
    `valid` marks real problems, a prefix on every device)."""

    def local(target, data, valid, max_iter):
        return fit_target(target, data, jnp.sum(valid), width, max_iter)

    rep, spec = PartitionSpec(), PartitionSpec("batch")
    return jax.shard_map(local, mesh=mesh(), in_specs=(rep, spec, spec, rep), out_specs=spec,
                         check_vma=False)(target, data, valid, max_iter)


def run_given(target: Target, data, n: int, chunk, progress, max_iter, desc, dims):
    """Fit n problems with given statistics (numpy pytree, leading axis n), chunk by chunk."""
    per_dev = chunk_size(n, bytes_per_problem(*dims), chunk)
    sharding = NamedSharding(mesh(), PartitionSpec("batch"))
    merged, first, n_chunks = None, 0, 0
    t0 = time.perf_counter()
    with progress_bar(n, progress, desc) as bar:
        while first < n:
            idx, size = chunk_indices(first, per_dev, n)
            real = idx < n
            take = np.minimum(idx, n - 1)
            piece = jax.tree_util.tree_map(lambda a: jax.device_put(np.asarray(a)[take], sharding), data)
            out = given_chunk(target, piece, jax.device_put(real, sharding), jnp.asarray(max_iter, jnp.int32),
                               width=slot_width())
            out = gather(out)
            if merged is None:
                merged = {name: np.empty((n,) + v.shape[1:], v.dtype) for name, v in out.items()}
            for name, v in out.items():
                merged[name][idx[real]] = v[real]
            bar.update(int(real.sum()))
            first += size
            n_chunks += 1
    return merged, dict(seconds=time.perf_counter() - t0, chunk=per_dev * len(jax.devices()), chunks=n_chunks,
                        devices=len(jax.devices()))
