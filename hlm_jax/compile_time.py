"""Seconds JAX spends tracing, lowering and compiling programs, from JAX's own monitoring events, so results
can report their compile time apart from their run time; and `Program`, a jitted function whose compiled
executables are kept on disk so that a fresh process skips tracing, lowering and compiling it."""
from __future__ import annotations

import functools
import hashlib
import importlib.machinery
import importlib.util
import os
import pickle
import platform
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass

import jax
import jaxlib
import numpy as np
from jax import monitoring
from jax.experimental import serialize_executable
from jaxlib import lapack

# tracing to a jaxpr, lowering to StableHLO, and XLA's compile (or the persistent cache's load)
EVENTS = ("/jax/core/compile/jaxpr_trace_duration", "/jax/core/compile/jaxpr_to_mlir_module_duration",
          "/jax/core/compile/backend_compile_duration")
_total = [0.0]

# For programs run once per model or on tiny data, where compile time is all: XLA's classic CPU emitters
# and no LLVM optimisation compile 3-6x faster (benchmarks/README.md). Other backends ignore the first.
# On a few cores, generating the code as one module, not split for parallel threads, saves another 15-25%.
ONCE = {"xla_cpu_use_fusion_emitters": False, "xla_backend_optimization_level": 0,
        **({"xla_cpu_parallel_codegen_split_count": 1} if (os.cpu_count() or 1) <= 4 else {})}


_cache_hits = [0]  # programs JAX loaded from its persistent cache


def _record(event: str, seconds: float, **_) -> None:
    if event in EVENTS:
        _total[0] += seconds


def _count_hit(event: str, **_) -> None:
    if event == "/jax/compilation_cache/cache_hits":
        _cache_hits[0] += 1


monitoring.register_event_duration_secs_listener(_record)
monitoring.register_event_listener(_count_hit)


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


# ---- Compiled programs kept on disk ------------------------------------------------------------------------
# JAX's persistent cache keeps XLA's output but a fresh process still traces and lowers each program (about as
# long as loading it). A `Program` also keeps the compiled executable itself, serialized, keyed by the
# arguments' structure and shapes, the static arguments, the versions and the source of hlm_jax: a fresh process
# with a filled cache only reads and loads it.
def cache_dir() -> str | None:
    """Where compiled programs are kept (beside JAX's cache), or None when HLM_JAX_NO_CACHE is set."""
    if os.environ.get("HLM_JAX_NO_CACHE"):
        return None
    return os.path.join(os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "hlm_jax", "programs")


@functools.cache
def fingerprint() -> str:
    """What a kept executable depends on besides its arguments: hlm_jax's source, JAX's version, XLA's flags
    and the backend (its platform version names the machine's compiler target)."""
    digest = hashlib.sha256()
    package = os.path.dirname(os.path.abspath(__file__))
    for folder, _, files in sorted(os.walk(package)):
        for name in sorted(f for f in files if f.endswith(".py")):
            digest.update(os.path.relpath(os.path.join(folder, name), package).encode())
            with open(os.path.join(folder, name), "rb") as fh:
                digest.update(fh.read())
    backend = jax.devices()[0].client
    for part in (jax.__version__, jaxlib.__version__, os.environ.get("XLA_FLAGS", ""), backend.platform,
                 backend.platform_version, jax.devices()[0].device_kind, platform.machine(), _cpu_features()):
        digest.update(part.encode())
    return digest.hexdigest()


def _cpu_features() -> str:
    """The CPU's instruction-set flags where the system lists them: XLA compiles CPU code for this machine, so
    a cache shared with other machines (a network home directory) must not hand them its programs."""
    try:
        with open("/proc/cpuinfo") as fh:
            return next((line for line in fh if line.startswith(("flags", "Features"))), "")
    except OSError:
        return platform.processor()


# JAX's CPU kernels take LAPACK from scipy: jaxlib's `_lapack.initialize()` imports scipy.linalg.cython_blas and
# scipy.linalg.cython_lapack, and with them the whole of scipy.linalg's __init__ (0.25-0.3 s, its array-API layer,
# numpy.f2py...), which nothing else in a first fit needs. `_prepare_lapack` loads just those two extension modules
# from their files (15-35 ms) for that one call and takes them out of sys.modules again, so that a later
# `import scipy.linalg` (or of those modules) runs as usual; the module objects stay referenced here, since JAX
# keeps pointers into them. On any failure jaxlib imports them the usual way.
_LAPACK_MODULES: list = []


@functools.cache
def _prepare_lapack() -> None:
    """Point JAX's CPU kernels at LAPACK, as lowering any LAPACK call does (a loaded executable needs it): called
    before hlm_jax's programs are loaded or lowered, with scipy's two LAPACK modules loaded alone."""
    if jax.default_backend() != "cpu":
        return
    loaded = [] if "scipy.linalg" in sys.modules else _load_scipy_lapack()
    try:
        lapack.prepare_lapack_call("potrf", np.dtype(float))
    finally:
        for module in loaded:
            sys.modules.pop(module.__name__, None)
    _LAPACK_MODULES.extend(loaded)


def _load_scipy_lapack() -> list:
    """scipy.linalg.cython_blas and cython_lapack loaded from their files into sys.modules, without their
    package; none (and sys.modules as it was) when that fails."""
    loaded = []
    try:
        scipy_folders = importlib.util.find_spec("scipy").submodule_search_locations
        folders = [os.path.join(path, "linalg") for path in scipy_folders]
        for name in ("scipy.linalg.cython_blas", "scipy.linalg.cython_lapack"):
            if name in sys.modules:
                continue
            spec = importlib.machinery.PathFinder.find_spec(name, folders)  # the file only: no parent imported
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module
            loaded.append(module)
            spec.loader.exec_module(module)
    except Exception:  # noqa: BLE001 -- any failure: the usual import path serves
        for module in loaded:
            sys.modules.pop(module.__name__, None)
        return []
    return loaded


def _signature(args, static: dict) -> str | None:
    """The arguments' structure, shapes, dtypes and the static values as text; None when some part has no
    stable, complete text (an object printed with its address, a long array printed in part) or an argument is
    being traced (then JAX's jit serves)."""
    leaves, tree = jax.tree_util.tree_flatten(args)
    if any(isinstance(x, jax.core.Tracer) for x in leaves):  # called inside another traced function
        return None
    avals = [(np.shape(x), str(x.dtype if hasattr(x, "dtype") else np.result_type(x)),
              bool(getattr(x, "weak_type", False))) for x in leaves]
    text = repr((str(tree), avals, sorted(static.items()), jax.config.jax_enable_x64))
    return None if " at 0x" in text or "..." in text else text  # an address, or numpy's elided array text


@dataclass
class _Entry:
    """A program's executable for one signature in this process: compiled quickly or optimised, and its calls."""

    executable: object
    quick: bool
    calls: int = 0


class Program:
    """`jax.jit(fun)` whose executables are also kept on disk (see above); called as fun(*args, **static) with
    the static arguments as keywords. With `quick_options`, a signature first compiles with those (XLA's fast
    compile: a first fit waits for the compiler, not the run) and is compiled with `compiler_options` once it
    has been called `UPGRADE_CALLS` times in a process (a loop: the run time counts); the disk keeps both.
    `jit` is the jitted function, for JAX's ahead-of-time API."""

    def __init__(self, fun, name: str, static_argnames=(), compiler_options: dict | None = None,
                 quick_options: dict | None = None):
        self.name, self.options, self.quick_options = name, compiler_options, quick_options
        self.jit = jax.jit(fun, static_argnames=static_argnames)
        self._plain = jax.jit(fun, static_argnames=static_argnames, compiler_options=compiler_options)
        self._loaded: dict[str, _Entry] = {}

    def __call__(self, *args, **static):
        _prepare_lapack()  # before any lowering or loading (see above)
        key = _signature(args, static)
        if key is None or jax.device_count() > 1:  # sharded over several devices: JAX's own caches only
            return self._plain(*args, **static)
        entry = self._loaded.get(key)
        if entry is None:
            quick = self.quick_options is not None and jax.default_backend() == "cpu"
            entry = self._loaded[key] = self._load(key) or self._compile(key, args, static, quick)
        entry.calls += 1
        if entry.quick and entry.calls >= UPGRADE_CALLS:
            entry = self._loaded[key] = self._load(key, optimised_only=True) or self._compile(key, args, static, False)
        return entry.executable(*args)

    def _file(self, key: str, quick: bool) -> str | None:
        folder = cache_dir()
        if folder is None:
            return None
        name = self.name + (".quick" if quick else "")
        return os.path.join(folder, f"{name}-{fingerprint()[:16]}-{hashlib.sha256(key.encode()).hexdigest()[:24]}")

    def _load(self, key: str, optimised_only: bool = False) -> _Entry | None:
        """The executable kept on disk, the optimised one first; None when neither is there (or readable)."""
        for quick in (False, True) if self.quick_options is not None and not optimised_only else (False,):
            path = self._file(key, quick)
            if path is None or not os.path.exists(path) or not _private(path):
                continue
            start = time.perf_counter()
            try:
                with open(path, "rb") as fh:
                    executable = serialize_executable.deserialize_and_load(*pickle.load(fh))
                return _Entry(executable, quick)
            except Exception:  # a damaged or foreign file: compiled afresh and overwritten
                pass
            finally:
                _total[0] += time.perf_counter() - start
        return None

    def _compile(self, key: str, args, static: dict, quick: bool) -> _Entry:
        """Compile now (the trace and lowering are JAX's, cached in memory) and keep it for the next process."""
        hits, path = _cache_hits[0], self._file(key, quick)
        with _jax_cache_keeps(path is None):
            executable = self.jit.lower(*args, **static).compile(self.quick_options if quick else self.options)
        if path is not None and _cache_hits[0] == hits:  # one JAX loaded from its cache serializes incompletely
            _write(path, executable)
        return _Entry(executable, quick)


@contextmanager
def _jax_cache_keeps(keep: bool):
    """JAX's persistent cache writes what compiles here only when `keep` (a program kept on disk by hlm_jax
    is not serialized and written twice); it still reads it."""
    option = "jax_persistent_cache_min_compile_time_secs"
    previous = getattr(jax.config, option)
    if not keep:
        jax.config.update(option, float("inf"))
    try:
        yield
    finally:
        jax.config.update(option, previous)


UPGRADE_CALLS = 10  # calls of a quick-compiled signature in one process before it is optimised (a loop)


STALE_SECONDS = 86400  # files of another version of hlm_jax or JAX older than this are removed on a write


def _private(path: str) -> bool:
    """Whether `path` and its folder belong to this user and no one else may write them: a kept program is
    unpickled, so a file another user could have written is never loaded (nor a folder of theirs written)."""
    if not hasattr(os, "getuid"):
        return True
    for place in (path, os.path.dirname(path)):
        info = os.stat(place)
        if info.st_uid != os.getuid() or info.st_mode & 0o022:
            return False
    return True


def _write(path: str, executable) -> None:
    """Serialize an executable to `path` (name-version-key) atomically and remove the same program's files of
    other versions not written for a day; a program that cannot be serialized is not kept."""
    folder, name = os.path.split(path)
    try:
        payload = pickle.dumps(serialize_executable.serialize(executable))
        os.makedirs(folder, mode=0o700, exist_ok=True)
        if not _private(folder):
            return
        program, version, _ = name.rsplit("-", 2)
        for old in os.scandir(folder):
            if (old.name.startswith(program + "-") and old.name.count("-") == name.count("-")
                    and old.name.split("-")[-2] != version and time.time() - old.stat().st_mtime > STALE_SECONDS):
                os.remove(old.path)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".", delete=False) as fh:
            fh.write(payload)
        os.replace(fh.name, path)
    except (ValueError, NotImplementedError, OSError, pickle.PicklingError):
        pass
