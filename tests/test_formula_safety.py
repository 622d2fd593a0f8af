"""A formula never runs code, through any entry point; warnings point at the caller's line; a fuzz test
over a formula grammar (valid and invalid) finds only fits, FormulaError or DesignError."""
from __future__ import annotations

import contextlib
import io
import os
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import hlm_jax as hj
from hlm_jax.__main__ import main as cli
from hlm_jax.design import build_design

SLEEP = hj.datasets.load("sleepstudy")
HSB = hj.datasets.load("hsb").query("school < 1400")
CBPP = hj.datasets.load("cbpp")

PAYLOADS = [
    "I(__import__('os').system('touch {path}'))",
    "__import__('os').system('touch {path}')",
    "I(Days.__class__.__init__.__globals__['os'].system('touch {path}'))",
    "I((lambda: __import__('os').system('touch {path}'))())",
    "np.os.system('touch {path}')",
    "C(Days, __import__('os').system('touch {path}'))",
    "log(Days).__class__.__base__.__subclasses__()",
    "I(open('{path}', 'w'))",
]


def entry_points():
    """(name, function of a payload that calls one entry point with the payload in a formula)."""
    many = dict(responses=np.column_stack([SLEEP["Reaction"]] * 2))
    return [
        ("lmer fixed", lambda p: hj.lmer(f"Reaction ~ {p} + (1 | Subject)", SLEEP)),
        ("lmer random", lambda p: hj.lmer(f"Reaction ~ Days + ({p} | Subject)", SLEEP)),
        ("lmer group", lambda p: hj.lmer(f"Reaction ~ Days + (1 | {p})", SLEEP)),
        ("lmer response", lambda p: hj.lmer(f"{p} ~ Days + (1 | Subject)", SLEEP)),
        ("lmer bare bar", lambda p: hj.lmer(f"Reaction ~ {p} | Subject", SLEEP)),
        ("lmlist", lambda p: hj.lmlist(f"Reaction ~ {p} | Subject", SLEEP)),
        ("fit_many data sets", lambda p: hj.fit_many(f"Reaction ~ {p} + (1 | Subject)", [SLEEP, SLEEP])),
        ("fit_many responses", lambda p: hj.fit_many(f"Reaction ~ {p} + (1 | Subject)", SLEEP, **many)),
        ("hlm level 1", lambda p: hj.hlm(f"mathach ~ {p}", group="school", data=HSB)),
        ("hlm level 2", lambda p: hj.hlm("mathach ~ ses", {"ses": f"~ {p}"}, group="school", data=HSB)),
        ("hlm level 3", lambda p: hj.hlm("mathach ~ 1", level3={"(Intercept)": f"~ {p}"},
                                         group=["school", "sector"], data=HSB)),
        ("hausman_test", lambda p: hj.hausman_test(f"mathach ~ ses + {p} + (1 | school)", HSB, "ses")),
        ("compare_methods", lambda p: hj.compare_methods(f"mathach ~ {p}", group="school", data=HSB)),
        ("lm", lambda p: hj.lm(f"Reaction ~ {p}", SLEEP)),
        ("glmer fixed", lambda p: hj.glmer(f"incidence ~ {p} + (1 | herd)", CBPP, family="poisson")),
        ("glmer response", lambda p: hj.glmer(f"cbind(incidence, {p}) ~ period + (1 | herd)", CBPP)),
        ("glmer offset", lambda p: hj.glmer(f"incidence ~ period + offset({p}) + (1 | herd)", CBPP,
                                            family="poisson")),
    ]


@pytest.mark.parametrize("payload", PAYLOADS)
@pytest.mark.parametrize("name, call", entry_points(), ids=[e[0] for e in entry_points()])
def test_formula_code_is_never_run(tmp_path, name, call, payload):
    path = tmp_path / "ran"
    with pytest.raises(hj.FormulaError):
        call(payload.format(path=path))
    assert not path.exists()


@pytest.mark.parametrize("payload", PAYLOADS)
def test_cli_formula_code_is_never_run(tmp_path, payload):
    path = tmp_path / "ran"
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = cli(["fit", f"Reaction ~ {payload.format(path=path)} + (1 | Subject)", "--dataset", "sleepstudy"])
    assert code == 2 and err.getvalue().startswith("error: ")
    assert not path.exists()


def test_allowed_names_are_not_looked_up_in_python(tmp_path):
    """Names a Python `eval` would resolve (builtins, modules) are only ever data columns here."""
    for name in ["open", "os", "np", "exit", "print"]:
        with pytest.raises(hj.DesignError, match=f"column '{name}' is not in the data"):
            build_design(f"Reaction ~ {name} + (1 | Subject)", SLEEP)


# ---- warnings point at the caller's line -------------------------------------------------------

def _warned_here(call) -> list[str]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        call()
    assert caught
    return [w.filename for w in caught]


@pytest.mark.parametrize("call", [
    lambda: hj.lmer("Reaction ~ Days + (1 | Subject)", SLEEP.assign(Days=SLEEP["Days"].where(SLEEP.index != 3))),
    lambda: hj.lmer("Reaction ~ Days + I(2 * Days) + (1 | Subject)", SLEEP),
    lambda: hj.lmer("Yield ~ 1 + (1 | Batch)", hj.datasets.load("dyestuff2")),
    lambda: hj.lmlist("Reaction ~ Days | Subject", SLEEP[SLEEP["Days"] < 1 + (SLEEP["Subject"] != 308) * 9]),
    lambda: hj.hlm("mathach ~ ses", {"(Intercept)": "~ minrty"}, group="school", data=HSB),
], ids=["missing rows", "rank deficient", "singular", "lmlist failed group", "hlm level variable"])
def test_warnings_point_at_the_callers_line(call):
    assert set(_warned_here(call)) == {__file__}


# ---- fuzz: formulas drawn from a grammar ---------------------------------------------------------

NAMES = ["x", "y", "g", "f", "log", "C", "a b", "x.dot", "größe", "scale"]
FUZZ = pd.DataFrame({
    "x": np.tile(np.arange(6.0), 4), "y": np.sin(np.arange(24.0)) + np.arange(24.0) / 10,
    "g": np.repeat(list("abcd"), 6), "f": np.tile(["u", "v", "w"], 8), "log": np.linspace(1, 3, 24),
    "C": np.repeat([1, 2, 3, 4], 6), "a b": np.cos(np.arange(24.0)), "x.dot": np.arange(24.0) ** 0.5,
    "größe": np.tile([1.0, 2.0], 12), "scale": np.arange(24.0) % 5})


def _name(draw_name: str) -> str:
    return draw_name if draw_name.isidentifier() and draw_name.isascii() else f"`{draw_name}`"


names = st.sampled_from(NAMES).map(_name)
unknown = st.sampled_from(["nope", "x.real", "g.__class__", "`missing col`", "np.pi", "os"])
bad = st.sampled_from(["__import__('os').system('touch /tmp/hlm_jax_fuzz_canary')", "eval('x')", "x[0]", "lambda: x", "'x'", "x; y", "{x}", "getattr(x, 'y')",
                       "exec", "x.__dict__", "open('f')", "[x for x in y]", "f'x'", "x if y else g", "@x", "$x"])
arith = st.recursive(st.one_of(names, st.sampled_from(["1", "2", "0.5", "1e-3"])),
                     lambda inner: st.one_of(st.tuples(inner, st.sampled_from(["+", "-", "*", "/", "^"]), inner)
                                             .map(" ".join), inner.map(lambda e: f"({e})")), max_leaves=4)
atoms = st.one_of(names, names, unknown, bad,
                  st.tuples(st.sampled_from(["log", "np.log", "log1p", "exp", "sqrt", "abs", "scale", "center",
                                             "factor", "C", "I", "poly", "cbind", "offset", "foo"]), arith)
                  .map(lambda t: f"{t[0]}({t[1]})"),
                  st.tuples(names, st.integers(1, 3)).map(lambda t: f"poly({t[0]}, {t[1]})"))
terms = st.recursive(atoms, lambda inner: st.tuples(inner, st.sampled_from([" + ", " * ", ":", " - ", "/"]), inner)
                     .map("".join), max_leaves=3)
groups = st.sampled_from(["g", "f", "g/f", "g:f", "`a b`", "x.real", "nope", "I(g)"])


@st.composite
def formulas(draw):
    fixed = draw(st.sampled_from(["", "0 + ", "1 + "])) + draw(terms)
    random = f"({draw(st.sampled_from(['1', '0 + x', 'x', '1 + log']))} {draw(st.sampled_from(['|', '||']))} " \
             f"{draw(groups)})"
    form = draw(st.sampled_from(["{y} ~ {fixed} + {random}", "{y} ~ {random} + {fixed}", "{y} ~ {fixed}",
                                 "{y} ~ 1 | g", "{y} {fixed} + {random}", "{y} ~ {fixed} + {random})"]))
    response = draw(st.sampled_from(["y", "log(y + 2)", "`a b`", "y + x", "cbind(y, x)", "f"]))
    return form.format(y=response, fixed=fixed, random=random)


@settings(max_examples=int(os.environ.get("HLM_JAX_FUZZ_EXAMPLES", 25)), deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(formula=formulas())
def test_fuzzed_formulas_fit_or_raise_formula_or_design_errors(formula):
    """More examples: HLM_JAX_FUZZ_EXAMPLES=2000 python -m pytest tests/test_formula_safety.py -k fuzz."""
    canary = Path("/tmp/hlm_jax_fuzz_canary")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            hj.lmer(formula, FUZZ)
        except (hj.FormulaError, hj.DesignError) as exc:
            assert "\x1b[" not in str(exc)
    assert not canary.exists()


column_names = st.one_of(
    st.text(alphabet=st.sampled_from(list("abxyzäöß_.0129 ()[]'\"+-*/:|~^$@!{};,=")), min_size=1, max_size=8),
    st.sampled_from(["__class__", "log", "C", "scale", "np", "TRUE", "lambda", "class", "x.real", "1x", "a b"]),
).filter(lambda s: s not in ("y", "g"))


@settings(max_examples=int(os.environ.get("HLM_JAX_FUZZ_EXAMPLES", 12)), deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(names=st.lists(column_names, min_size=2, max_size=2, unique=True), bare=st.booleans())
def test_fuzzed_column_names_work_in_backticks(names, bare):
    """Any column name works in backticks, in the fixed part, inside a transform and in the random part;
    written bare it fits or gets FormulaError/DesignError, and never runs code."""
    data = pd.DataFrame({"y": FUZZ["y"], "g": FUZZ["g"], names[0]: FUZZ["x"], names[1]: FUZZ["log"]})
    a, b = (n if bare else f"`{n}`" for n in names)
    formula = f"y ~ {a} + log(abs({b}) + 1) + (1 + {a} | g)"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if bare:
            try:
                hj.lmer(formula, data)
            except (hj.FormulaError, hj.DesignError):
                pass
            return
        m = hj.lmer(formula, data)
    assert m.fixef.shape == (3,)
