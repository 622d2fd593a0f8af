"""The table of bad inputs: each input, the error (or fit) it gets, and docs/bad_inputs.md kept equal to it.

Every case runs here; the documentation is rendered from the outcomes, so it says what the code does.
Regenerate it with `PYTHONPATH=. python tests/test_bad_inputs.py` (from the repository root).
"""
from __future__ import annotations

import contextlib
import io
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pytest

import hlm_jax as hj
from hlm_jax.__main__ import main as cli

DOC = Path(__file__).resolve().parents[1] / "docs" / "bad_inputs.md"
CANARY = "/tmp/hlm_jax_formula_canary"
TOUCH = f"__import__('os').system('touch {CANARY}')"
SLEEP = hj.datasets.load("sleepstudy")
HSB_SMALL = hj.datasets.load("hsb").query("school < 1400")


@dataclass(frozen=True)
class Case:
    entry: str            # how it is called
    shown: str            # the input as the table shows it
    call: Callable        # runs it; returns a description of the result when it is not an error
    error: type | None    # the exception it must raise (None: it must succeed)
    match: str            # a fragment the message (or the description) must contain


def lmer(formula: str, **kw) -> Callable:
    return lambda: "fits; fixed effects " + ", ".join(hj.lmer(formula, SLEEP, **kw).fixef.index)


def lmer_on(data, formula: str) -> Callable:
    return lambda: "fits; fixed effects " + ", ".join(hj.lmer(formula, data).fixef.index)


def run_cli(formula: str) -> str:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = cli(["fit", formula, "--dataset", "sleepstudy"])
    return f"exit code {code}; stderr: {err.getvalue().splitlines()[0]}"


SPACED = SLEEP.rename(columns={"Days": "days in study", "Subject": "Subject.id"})
TRANSFORM_NAMES = SLEEP.rename(columns={"Days": "log", "Subject": "C"})
F, D = hj.FormulaError, hj.DesignError
CASES = [
    # code in a formula is never run: each is refused before any data is read
    Case("lmer", f"Reaction ~ I({TOUCH}) + (1 | Subject)", lmer(f"Reaction ~ I({TOUCH}) + (1 | Subject)"), F,
         "name '__import__' is not allowed"),
    Case("lmer", "Reaction ~ I(Days.__class__.__init__.__globals__['os']) + (1 | Subject)",
         lmer("Reaction ~ I(Days.__class__.__init__.__globals__['os']) + (1 | Subject)"), F, "no attribute access"),
    Case("lmer", "Reaction ~ Days + (Days[0] | Subject)", lmer("Reaction ~ Days + (Days[0] | Subject)"), F,
         "no subscripts"),
    Case("lmer", "Reaction ~ I(lambda d: d) + (1 | Subject)", lmer("Reaction ~ I(lambda d: d) + (1 | Subject)"), F,
         "'lambda' is Python syntax"),
    Case("lmer", "Reaction ~ I([d for d in Days]) + (1 | Subject)",
         lmer("Reaction ~ I([d for d in Days]) + (1 | Subject)"), F, "no subscripts"),
    Case("lmer", "Reaction ~ eval('Days') + (1 | Subject)", lmer("Reaction ~ eval('Days') + (1 | Subject)"), F,
         "function 'eval' is not allowed"),
    Case("lmer", "Reaction ~ 'Days' + (1 | Subject)", lmer("Reaction ~ 'Days' + (1 | Subject)"), F,
         "string 'Days' is not allowed"),
    Case("lmer", "Reaction ~ Days.real + (1 | Subject)", lmer("Reaction ~ Days.real + (1 | Subject)"), F,
         "attribute access"),
    Case("lmer", "Reaction ~ Days; import os", lmer("Reaction ~ Days; import os"), F, "character ';'"),
    Case("lmer", f"Reaction ~ Days + (1 | I({TOUCH}))", lmer(f"Reaction ~ Days + (1 | I({TOUCH}))"), F,
         "not allowed"),
    Case("lmlist", f"Reaction ~ I({TOUCH}) | Subject", lambda: hj.lmlist(f"Reaction ~ I({TOUCH}) | Subject", SLEEP),
         F, "not allowed"),
    Case("fit_many", "Reaction ~ Days.__class__ + (1 | Subject)",
         lambda: hj.fit_many("Reaction ~ Days.__class__ + (1 | Subject)", [SLEEP]), F, "not allowed"),
    Case("hlm", f"level1='mathach ~ {TOUCH}'", lambda: hj.hlm(f"mathach ~ {TOUCH}", group="school", data=HSB_SMALL),
         F, "not allowed"),
    Case("hlm", "level2={'(Intercept)': \"~ exec('1')\"}",
         lambda: hj.hlm("mathach ~ ses", {"(Intercept)": "~ exec('1')"}, group="school", data=HSB_SMALL), F,
         "function 'exec' is not allowed"),
    Case("CLI", f"fit \"Reaction ~ I({TOUCH}) + (1 | Subject)\" --dataset sleepstudy",
         lambda: run_cli(f"Reaction ~ I({TOUCH}) + (1 | Subject)"), None, "exit code 2; stderr: error: name"),
    # lme4 features not supported (yet)
    Case("lmer", "cbind(Reaction, Days) ~ 1 + (1 | Subject)", lmer("cbind(Reaction, Days) ~ 1 + (1 | Subject)"), F,
         "not supported by lmer yet"),
    Case("lmer", "Reaction ~ Days + weights(Days) + (1 | Subject)",
         lmer("Reaction ~ Days + weights(Days) + (1 | Subject)"), F, "weights go in the weights= argument"),
    Case("lmer", "Reaction ~ Days + cbind(Days, Days) + (1 | Subject)",
         lmer("Reaction ~ Days + cbind(Days, Days) + (1 | Subject)"), F, "can only be the response"),
    # mistakes
    Case("lmer", "factor(Subject) ~ Days + (1 | Subject)", lmer("factor(Subject) ~ Days + (1 | Subject)"), D,
         "must be one numeric column"),
    Case("lmer", "poly(Reaction, 2) ~ Days + (1 | Subject)", lmer("poly(Reaction, 2) ~ Days + (1 | Subject)"), D,
         "must be one numeric column"),
    Case("lmer", "Reaction ~ Day + (1 | Subject)", lmer("Reaction ~ Day + (1 | Subject)"), D,
         "did you mean 'Days'"),
    Case("lmer", "Reaction ~ Days", lmer("Reaction ~ Days"), F, "no random-effects term"),
    Case("lmer", "Reaction ~ Days + (1 | Subject", lmer("Reaction ~ Days + (1 | Subject"), F, "unclosed '('"),
    Case("lmer", "Reaction ~ 2 + Days + (1 | Subject)", lmer("Reaction ~ 2 + Days + (1 | Subject)"), F,
         "belong inside I()"),
    Case("lmer", "Reaction ~ Days + (1 | log(Subject))", lmer("Reaction ~ Days + (1 | log(Subject))"), F,
         "must be a column name"),
    Case("lmer", "Reaction ~ poly(Days, 10) + (1 | Subject)", lmer("Reaction ~ poly(Days, 10) + (1 | Subject)"), D,
         "less than the number of unique points"),
    Case("lmer", "Reaction ~ log(Days, 2) + (1 | Subject)", lmer("Reaction ~ log(Days, 2) + (1 | Subject)"), F,
         "log() takes one argument"),
    Case("lmer", "Reaction ~ Days + (1 | Subject), REML='no'", lmer("Reaction ~ Days + (1 | Subject)", REML="no"),
         ValueError, "REML must be True or False"),
    Case("lmer", "Reaction ~ log(Days) + (1 | Subject)", lmer("Reaction ~ log(Days) + (1 | Subject)"), D,
         "column 'log(Days)' is not finite (-inf) in 18 row(s): 0, 10, 20, 30, 40, ..."),
    Case("lmer", "Reaction ~ Days + (1 | Subject), with Days = inf in row 3",
         lmer_on(SLEEP.assign(Days=SLEEP["Days"].where(SLEEP.index != 3, np.inf)), "Reaction ~ Days + (1 | Subject)"),
         D, "column 'Days' is not finite (inf) in 1 row(s): 3"),
    Case("lmlist", "Reaction ~ Days | Subject, with Days = inf in row 3",
         lambda: hj.lmlist("Reaction ~ Days | Subject", SLEEP.assign(Days=SLEEP["Days"].where(SLEEP.index != 3,
                                                                                             np.inf))),
         D, "column 'Days' is not finite (inf) in 1 row(s): 3"),
    Case("lmlist", "Reaction ~ Days", lambda: hj.lmlist("Reaction ~ Days", SLEEP), F,
         "needs a formula 'response ~ predictors | group'"),
    # lme4's identifiability checks (IdentifiabilityError, a DesignError) and a level the first data set lacks
    Case("lmer", "Reaction ~ Days + (1 | obs), obs a different level in every row",
         lmer_on(SLEEP.assign(obs=np.arange(len(SLEEP))), "Reaction ~ Days + (1 | obs)"), hj.IdentifiabilityError,
         "number of levels of each grouping factor must be < number of observations (problems: obs)"),
    Case("lmer", "Reaction ~ Days + (Days | Subject), on the 36 rows with Days < 2",
         lmer_on(SLEEP[SLEEP.Days < 2], "Reaction ~ Days + (Days | Subject)"), hj.IdentifiabilityError,
         "number of observations (=36) <= number of random effects (=36) for term (1 + Days | Subject)"),
    Case("fit_many", "Reaction ~ g + (1 | Subject), g has a level in data set 1 that data set 0 lacks",
         lambda: hj.fit_many("Reaction ~ g + (1 | Subject)", [SLEEP.assign(g=np.where(SLEEP.Days < 5, "a", "b")),
                                                             SLEEP.assign(g=np.where(SLEEP.Days < 5, "a", "c"))],
                             progress=False), D, "data set 1: g has level 'c'"),
    # what works
    Case("lmer", "Reaction ~ factor(Days) + (1 | Subject)", lmer("Reaction ~ factor(Days) + (1 | Subject)"), None,
         "factor(Days)1"),
    Case("lmer", "Reaction ~ 1 | Subject", lmer("Reaction ~ 1 | Subject"), None, "fits; fixed effects (Intercept)"),
    Case("lmer", "Reaction ~ Days + offset(Days) + (1 | Subject)",
         lmer("Reaction ~ Days + offset(Days) + (1 | Subject)"), None, "fits; fixed effects (Intercept), Days"),
    Case("lmer", "Reaction ~ log + (log | C)  (columns named log and C)",
         lmer_on(TRANSFORM_NAMES, "Reaction ~ log + (log | C)"), None, "(Intercept), log"),
    Case("lmer", "Reaction ~ `days in study` + (1 | `Subject.id`)",
         lmer_on(SPACED, "Reaction ~ `days in study` + (1 | `Subject.id`)"), None, "`days in study`"),
    Case("lmer", "Reaction ~ I(Days^2) + log1p(Days) + (1 | Subject)",
         lmer("Reaction ~ I(Days^2) + log1p(Days) + (1 | Subject)"), None, "I(Days^2), log1p(Days)"),
]


def outcome(case: Case) -> tuple[type | None, str]:
    """The exception type and message a case gets, or None and the description of its result."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return None, str(case.call())
        except Exception as exc:  # noqa: BLE001 - the table records whatever happens
            return type(exc), str(exc)


@pytest.fixture(scope="module")
def outcomes():
    if Path(CANARY).exists():
        Path(CANARY).unlink()
    results = [outcome(c) for c in CASES]
    assert not Path(CANARY).exists(), "a formula ran code"
    return results


@pytest.mark.parametrize("k", range(len(CASES)), ids=[f"{c.entry}: {c.shown}" for c in CASES])
def test_bad_input_gets_its_error(outcomes, k):
    error, message = outcomes[k]
    case = CASES[k]
    assert error is case.error, message
    assert case.match in message
    assert "\x1b[" not in message  # no ANSI colour codes


def render(results) -> str:
    lines = ["# Bad inputs and what they get", "",
             "Generated by `PYTHONPATH=. python tests/test_bad_inputs.py` from the cases in that file; "
             "`tests/test_bad_inputs.py` checks that this page is current.", "",
             "Formula errors (`FormulaError`) are raised while parsing, before any data is read; the full "
             "message also repeats the formula with a caret under the token at fault.", "",
             "| Call | Input | Gets |", "| --- | --- | --- |"]
    for case, (error, message) in zip(CASES, results):
        got = message.splitlines()[0] if message else ""
        got = f"`{error.__name__}`: {got}" if error is not None else got
        lines.append(f"| {case.entry} | {_cell(case.shown)} | {_cell(got)} |")
    return "\n".join(lines) + "\n"


def _cell(text: str) -> str:
    """Markdown table cell: code span (backticks doubled around text with backticks), pipes escaped."""
    fence = "``" if "`" in text else "`"
    return f"{fence} {text} {fence}".replace("|", "\\|")


def test_docs_table_is_current(outcomes):
    assert DOC.read_text() == render(outcomes), "run: python tests/test_bad_inputs.py"


if __name__ == "__main__":
    DOC.parent.mkdir(exist_ok=True)
    DOC.write_text(render([outcome(c) for c in CASES]))
    sys.exit(0)
