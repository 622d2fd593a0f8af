"""Seconds JAX spends tracing, lowering and compiling programs, from JAX's own monitoring events,
so results can report their compile time apart from their run time."""
from __future__ import annotations

import time
from contextlib import contextmanager

from jax import monitoring

# tracing to a jaxpr, lowering to StableHLO, and XLA's compile (or the persistent cache's load)
EVENTS = ("/jax/core/compile/jaxpr_trace_duration", "/jax/core/compile/jaxpr_to_mlir_module_duration",
          "/jax/core/compile/backend_compile_duration")
_total = [0.0]

# For programs run once per model or on tiny data, where compile time is all: XLA's classic CPU emitters
# and no LLVM optimisation compile 3-6x faster (benchmarks/README.md). Other backends ignore the first.
ONCE = {"xla_cpu_use_fusion_emitters": False, "xla_backend_optimization_level": 0}


def _record(event: str, seconds: float, **_) -> None:
    if event in EVENTS:
        _total[0] += seconds


monitoring.register_event_duration_secs_listener(_record)


@contextmanager
def timed():
    """`with timed() as t: ...` fills t with `seconds` (wall), `compile_s` (trace, lower, compile) and
    `run_s` (the rest)."""
    out: dict = {}
    start, compiled = time.perf_counter(), _total[0]
    try:
        yield out
    finally:
        out["seconds"] = time.perf_counter() - start
        out["compile_s"] = _total[0] - compiled
        out["run_s"] = max(out["seconds"] - out["compile_s"], 0.0)
