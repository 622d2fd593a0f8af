"""The batched programs, chunk by chunk: simulated replicates or given statistics, sharded over devices."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from ..compile_time import ONCE, Program, timed
from ..distributed import gather
from ..fit import SINGLE_FIT_OPTIONS
from .devices import chunk_indices, chunk_size, mesh, on_cpu, progress_bar, slot_width
from .simulate import Simulator
from .targets import Target, fit_target


# The classic CPU emitters (as single fits) compile a batched program in 2/3 of the time and run it faster.
# On a CPU, a run of one small chunk is compile-bound: without LLVM's optimisations the program compiles
# 3× faster and runs 1.6× slower (benchmarks/README.md), so small chunks take that variant.
THROUGHPUT = SINGLE_FIT_OPTIONS
LATENCY = ONCE
LATENCY_MAX_CHUNK = 2048


def _jitted(fn, name: str) -> dict:
    """fn compiled for throughput and for latency, each kept on disk (`compile_time.Program`)."""
    return {False: Program(fn, name, static_argnames=("width",), compiler_options=THROUGHPUT),
            True: Program(fn, name + ".latency", static_argnames=("width",), compiler_options=LATENCY)}


def for_latency(per_dev: int) -> bool:
    """Whether chunks of per_dev problems per device take the fast-compiling program."""
    return on_cpu() and per_dev <= LATENCY_MAX_CHUNK


def _simulated_chunk(simulator: Simulator, targets: tuple, key, idx, n_total, max_iter, width: int):
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


simulated_chunk = _jitted(_simulated_chunk, "simulated_chunk")


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
    """All n replicates, chunk by chunk; per-target dicts of numpy arrays (length n) and timings."""
    per_dev = chunk_size(n, bytes_per_problem(*dims), chunk)
    key = jax.random.PRNGKey(seed)
    sharding = NamedSharding(mesh(), PartitionSpec("batch"))

    def fit_chunk(idx, real):
        return simulated_chunk[for_latency(per_dev)](simulator, targets, key, jax.device_put(idx, sharding),
                                                     jnp.asarray(n, jnp.int32), jnp.asarray(max_iter, jnp.int32),
                                                     width=slot_width())

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
        return program(target, piece, jax.device_put(real, sharding), jnp.asarray(max_iter, jnp.int32),
                       width=width or slot_width())

    return run_chunks(n, per_dev, progress, desc, fit_chunk)
