"""hlm_jax: hierarchical and linear mixed-effects models in lme4's formula syntax, fitted with JAX.

    import hlm_jax as hj
    m = hj.lmer("Reaction ~ Days + (Days | Subject)", hj.datasets.load("sleepstudy"))
    print(m.summary())

Computations run in float64 inside a `jax.enable_x64` context: the user's global
JAX setting is not changed. JAX's persistent compilation cache is switched on
(under ~/.cache/hlm_jax) unless the user configured one or set HLM_JAX_NO_CACHE=1;
hlm_jax's main programs are also kept there compiled (`compile_time.Program`), so a
fresh process loads them instead of tracing and compiling (HLM_JAX_NO_CACHE=1: neither).
"""
from __future__ import annotations

import gc
import importlib
import os

import jax

from . import datasets
from .checks import IdentifiabilityError
from .design import DesignError, NotYetSupportedError
from .formula import FormulaError
from .results import ConvergenceWarning, LmerModel, SingularFitWarning, lmer

# Later rooms (inference, the multilevel form, batches, GLMM families, user-written models, residual structures)
# load on first use: they pull in scipy.stats, jax.scipy.special and more, which a first `lmer` fit does not need.
_LAZY = {
    "families": "model.family", "GroupModel": "model.user",
    "AR1": "model.residual", "CAR1": "model.residual", "CompSymm": "model.residual", "VarIdent": "model.residual",
    "VarPower": "model.residual", "VarExp": "model.residual",
    "fit_group": "user_fit", "GroupModelFit": "user_fit",
    "anova": "inference", "AnovaResult": "inference", "DifferentDataError": "inference",
    "lm": "ols", "LmModel": "ols",
    "hlm": "multilevel", "HlmModel": "multilevel", "group_mean": "multilevel", "center_within": "multilevel",
    "hausman_test": "multilevel", "compare_methods": "multilevel",
    "lmlist": "batch", "bootstrap": "batch", "pb_test": "batch", "fit_many": "batch",
    "glmer": "glmm_results", "GlmerModel": "glmm_results",
    "BootstrapResult": "batch", "PBTest": "batch", "LmList": "batch", "BatchWarning": "batch",
}


# Methods of a fitted model whose computations live in later rooms (inference, batch): bound here, in the
# room that sees every other, so results.py imports none of them; each loads its room on first call.
_METHODS = {
    "bootstrap": ("batch", "bootstrap", "Parametric bootstrap (lme4's bootMer): see `hlm_jax.bootstrap`."),
    "confint": ("inference.profile", "confint", "Confidence intervals: see `hlm_jax.inference.profile.confint`."),
    "icc": ("inference.variance", "icc", "Intraclass correlation (adjusted, conditional, per grouping factor)."),
    "r2": ("inference.variance", "r2", "Nakagawa-Schielzeth marginal and conditional R²."),
    "ddf_table": ("inference.ddf", "ddf_table", "Fixed effects with Satterthwaite or Kenward-Roger df and p."),
    "variance_table": ("inference.information", "variance_table",
                       "Variance parameters and σ with SEs from the exact Hessian, on the users' scale."),
}


def _later(module: str, name: str, doc: str):
    """A method that calls `name` of the later room `module`, imported on first call."""

    def method(self, *args, **kwargs):
        return getattr(importlib.import_module(f".{module}", __name__), name)(self, *args, **kwargs)

    method.__name__, method.__doc__ = name, doc
    return method


for _name, (_module, _function, _doc) in _METHODS.items():
    setattr(LmerModel, _name, _later(_module, _function, _doc))


def __getattr__(name: str):
    """The later rooms' names (`_LAZY`) and `plot`, imported on first access (PEP 562)."""
    if name == "plot":  # matplotlib loads only when figures are asked for
        return importlib.import_module(".plot", __name__)
    if name in _LAZY:
        module = importlib.import_module(f".{_LAZY[name]}", __name__)
        value = module if name == "families" else getattr(module, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'hlm_jax' has no attribute {name!r}")


def __dir__() -> list[str]:
    """The loaded names and those `__getattr__` loads on first access."""
    return sorted(set(globals()) | set(_LAZY) | {"plot"})


def _enable_compilation_cache() -> None:
    """Persist compiled programs across processes so a fresh notebook skips most compile time."""
    if os.environ.get("HLM_JAX_NO_CACHE") or jax.config.jax_compilation_cache_dir:
        return
    path = os.path.join(os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "hlm_jax", "jax")
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)


_enable_compilation_cache()


def _freeze_imported_objects() -> None:
    """Move the objects alive after the imports above (JAX's, pandas', scipy's and hlm_jax's modules, about
    130,000) into the garbage collector's permanent generation (`gc.freeze`), so that later full collections and
    the one at interpreter exit skip them: a process that fits a model ends 0.2-0.4 s sooner. HLM_JAX_NO_GC_FREEZE=1
    leaves the collector as it is."""
    if not os.environ.get("HLM_JAX_NO_GC_FREEZE"):
        gc.freeze()


_freeze_imported_objects()

__all__ = ["lm", "LmModel", "lmer", "glmer", "GlmerModel", "families", "LmerModel", "datasets", "AR1", "CAR1", "CompSymm", "VarIdent", "VarPower", "VarExp",
           "GroupModel", "fit_group", "GroupModelFit",
           "FormulaError", "DesignError", "IdentifiabilityError", "NotYetSupportedError",
           "ConvergenceWarning", "SingularFitWarning",
           "anova", "AnovaResult", "DifferentDataError", "hlm", "HlmModel", "group_mean", "center_within",
           "hausman_test", "compare_methods",
           "lmlist", "bootstrap", "pb_test", "fit_many", "BootstrapResult", "PBTest", "LmList", "BatchWarning"]
