"""The batched programs, chunk by chunk: simulated replicates' statistics, and fits to given statistics (the
simulated ones or fit_many's), sharded over devices."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from ..compile_time import ONCE, Program, timed
from ..distributed import gather
from ..fit import SINGLE_FIT_OPTIONS
from .devices import chunk_indices, chunk_size, mesh, on_cpu, prng_key, progress_bar, slot_width, to_device
from .simulate import Simulator
from .targets import Target, fit_target


# The classic CPU emitters (as single fits) compile a batched program in 2/3 of the time and run it faster.
# On a CPU, a run of one small chunk is compile-bound: without LLVM's optimisations the program compiles
# 3× faster and runs 1.6× slower (benchmarks/README.md), so small chunks take that variant.
THROUGHPUT = SINGLE_FIT_OPTIONS
LATENCY = ONCE
LATENCY_MAX_CHUNK = 2048


def _jitted(fn, name: str, static_argnames=("width",)) -> dict:
    """fn compiled for throughput and for latency, each kept on disk (`compile_time.Program`)."""
    return {False: Program(fn, name, static_argnames=static_argnames, compiler_options=THROUGHPUT),
            True: Program(fn, name + ".latency", static_argnames=static_argnames, compiler_options=LATENCY)}


def for_latency(per_dev: int) -> bool:
    """Whether chunks of per_dev problems per device take the fast-compiling program."""
    return on_cpu() and per_dev <= LATENCY_MAX_CHUNK


def _simulated_statistics(simulator: Simulator, key, idx):
    """Each target's y-dependent statistics for replicates `idx` (sharded over the devices): drawn in a program
    of their own, so that the fitting program is `given_chunk`, the one fit_many and every other simulator
    feeding a target of the same shapes share (compiled once per process, or loaded once from disk)."""

    def local(simulator, key, idx):
        keys = jax.vmap(jax.random.fold_in, (None, 0))(key, idx)
        draws = jax.vmap(simulator.draw)(keys)
        return tuple(jax.vmap(lambda d: simulator.statistics(d, t))(draws) for t in range(len(simulator.targets)))

    rep, spec = PartitionSpec(), PartitionSpec("batch")
    return jax.shard_map(local, mesh=mesh(), in_specs=(rep, rep, spec), out_specs=spec,
                         check_vma=False)(simulator, key, idx)


simulated_statistics = _jitted(_simulated_statistics, "simulated_statistics", ())


def bytes_per_problem(G: int, q: int, p: int, batched_design: bool = False) -> int:
    """Memory one queued problem holds: its statistics and results."""
    per_group = q * q + q * p + q if batched_design else q
    return 8 * (G * per_group + (p + 2) ** 2 + 64)


def run_chunks(n: int, per_dev: int, progress, desc: str, fit_chunk):
    """Call fit_chunk(idx, real) on each chunk of the n problems and gather its outputs (a pytree of arrays
    with a leading problem axis) into numpy arrays of length n; returns them and the timings."""
    merged, first, n_chunks = None, 0, 0
    with timed() as timing, progress_bar(n, progress, desc) as bar:
        while first < n:
            idx, size = chunk_indices(first, per_dev, n)
            real = idx < n
            out = jax.tree_util.tree_map(np.asarray, gather(fit_chunk(idx, real)))
            if merged is None:
                merged = jax.tree_util.tree_map(lambda v: np.empty((n,) + v.shape[1:], v.dtype), out)
            jax.tree_util.tree_map(lambda m, v: m.__setitem__(idx[real], v[real]), merged, out)
            bar.update(int(real.sum()))
            first += size
            n_chunks += 1
    return merged, dict(timing, chunk=per_dev * len(jax.devices()), chunks=n_chunks, devices=len(jax.devices()))


def run_simulated(simulator, targets, n, seed, chunk, progress, max_iter, desc, dims):
    """All n replicates, chunk by chunk: the statistics drawn (`simulated_statistics`), then each target fitted
    to them (`given_chunk`); per-target dicts of numpy arrays (length n) and timings."""
    per_dev = chunk_size(n, bytes_per_problem(*dims), chunk)
    latency = for_latency(per_dev)
    key = prng_key(seed)
    sharding = NamedSharding(mesh(), PartitionSpec("batch"))

    def fit_chunk(idx, real):
        statistics = simulated_statistics[latency](simulator, key, jax.device_put(idx, sharding))
        valid = jax.device_put(real, sharding)
        return tuple(given_chunk[latency](target, data, valid, to_device(max_iter, np.int32), width=slot_width())
                     for target, data in zip(targets, statistics))

    return run_chunks(n, per_dev, progress, desc, fit_chunk)


def _given_chunk(target: Target, data, valid, max_iter, width: int):
    """Fit problems whose statistics are given (`data`: pytree, leading axis sharded over devices;
    `valid` marks real problems, a prefix on every device)."""

    def local(target, data, valid, max_iter):
        return fit_target(target, data, jnp.sum(valid), width, max_iter)

    rep, spec = PartitionSpec(), PartitionSpec("batch")
    return jax.shard_map(local, mesh=mesh(), in_specs=(rep, spec, spec, rep), out_specs=spec,
                         check_vma=False)(target, data, valid, max_iter)


given_chunk = _jitted(_given_chunk, "given_chunk")


def run_given(target: Target, data, n: int, chunk, progress, max_iter, desc, dims, width: int | None = None,
              latency: bool | None = None):
    """Fit n problems with given statistics (numpy pytree, leading axis n), chunk by chunk (`width` slots
    per device: the platform's by default; `latency`: the fast-compiling program, by default for small chunks)."""
    per_dev = chunk_size(n, bytes_per_problem(*dims), chunk)
    sharding = NamedSharding(mesh(), PartitionSpec("batch"))

    def fit_chunk(idx, real):
        take = np.minimum(idx, n - 1)
        piece = jax.tree_util.tree_map(lambda a: jax.device_put(np.asarray(a)[take], sharding), data)
        program = given_chunk[for_latency(per_dev) if latency is None else latency]
        return program(target, piece, jax.device_put(real, sharding), to_device(max_iter, np.int32),
                       width=width or slot_width())

    return run_chunks(n, per_dev, progress, desc, fit_chunk)
