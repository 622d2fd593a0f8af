"""Devices, memory and chunks: how many problems one program call takes, and the device mesh."""
from __future__ import annotations

import os

import jax
import numpy as np
from jax.sharding import Mesh

from ..design import bucket_length
from ..distributed import agree_min, is_main
from ..progress import bar


# Slots stepping together per device (`optimize.minimize_queue`): on a CPU a few hundred problems keep
# the working set in cache; accelerators want wide batches. A chunk (one program call) holds up to
# CHUNK problems per device; the progress bar advances per chunk.
CPU_WIDTH, ACCELERATOR_WIDTH = 256, 8192
CPU_CHUNK, ACCELERATOR_CHUNK = 4096, 65536
MIN_CHUNK = 64
MEMORY_FRACTION = 0.25


def mesh() -> Mesh:
    """The batch axis over every device, of every process after `distributed.initialize`."""
    return Mesh(np.array(jax.devices()), ("batch",))


def available_bytes() -> int:
    """Free memory of the first device (accelerators) or of the host (CPU)."""
    dev = jax.local_devices()[0]
    try:
        stats = dev.memory_stats()
    except Exception:  # CPU devices may not report
        stats = None
    if stats and "bytes_limit" in stats:
        return int(stats["bytes_limit"] - stats.get("bytes_in_use", 0))
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return 2 ** 31


# A fresh process compiles a small program for each new shape that jnp.asarray lifts from numpy (20-60 ms each)
# and two for jax.random.PRNGKey (about 0.1 s); device_put and a key built on the host compile nothing.
def to_device(x, dtype=None) -> jax.Array:
    """A numpy array (or array-like) on the default device, as jnp.asarray(x, dtype) gives it, compiling nothing."""
    return jax.device_put(np.asarray(x, dtype=dtype))


def prng_key(seed: int) -> jax.Array:
    """jax.random.PRNGKey(seed), built on the host for the default threefry generator (64-bit mode: the seed's
    high and low 32 bits)."""
    if jax.config.jax_default_prng_impl != "threefry2x32" or not jax.config.jax_enable_x64:
        return jax.random.PRNGKey(seed)
    u = int(seed) % 2 ** 64
    return to_device(np.array([u >> 32, u & 0xFFFFFFFF], np.uint32))


def on_cpu() -> bool:
    return jax.devices()[0].platform == "cpu"


def slot_width() -> int:
    return CPU_WIDTH if on_cpu() else ACCELERATOR_WIDTH


def chunk_size(n: int, bytes_per_problem: int, chunk: int | None) -> int:
    """Problems per device in one chunk: a power of two within MEMORY_FRACTION of the free memory,
    no larger than needed for n (so a repeated call reuses the compiled program)."""
    n_dev = len(jax.devices())
    if chunk is not None:
        if isinstance(chunk, bool) or not isinstance(chunk, (int, np.integer)) or chunk < 1:
            raise ValueError(f"chunk must be a positive integer, got {chunk!r}")
        return bucket_length(-(-int(chunk) // n_dev))
    per_dev = CPU_CHUNK if on_cpu() else ACCELERATOR_CHUNK
    fits = max(int(MEMORY_FRACTION * available_bytes()) // max(bytes_per_problem * n_dev, 1), 1)
    per_dev = min(per_dev, 1 << (fits.bit_length() - 1))
    return agree_min(max(min(per_dev, bucket_length(max(-(-n // n_dev), MIN_CHUNK))), 1))


def chunk_indices(first: int, per_dev: int, n: int) -> tuple[np.ndarray, int]:
    """Problem indices of one chunk laid out device by device, dealt round-robin so every device gets
    an equal share and its valid problems (index < n) come first; and the chunk's size."""
    n_dev = len(jax.devices())
    size = per_dev * n_dev
    idx = first + np.arange(size).reshape(per_dev, n_dev).T.ravel()
    return idx.astype(np.int32), size


def progress_bar(total: int, show: bool | None, desc: str):
    """The batch's progress bar (hlm_jax.progress), drawn by the main process only."""
    return bar(total, show if is_main() else False, desc)
