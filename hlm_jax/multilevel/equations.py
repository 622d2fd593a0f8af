"""The level equations of `hlm()`: parsed, substituted into one lme4 formula (`HlmSpec`)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import pandas as pd

from ..formula import FormulaError, parse_terms, variables
from ..messages import warn


INTERCEPT_KEYS = ("1", "(Intercept)", "Intercept")



def equation_terms(rhs: str, what: str) -> list[str]:
    """Formula terms of a right-hand side ('1' for the intercept), in R's order (by degree)."""
    return parse_terms(rhs, what).labels


def _rhs(equation: str, what: str) -> str:
    text = equation.strip()
    if text.count("~") > 1:
        raise FormulaError(f"the {what} {equation!r} has more than one '~'")
    if "~" in text:
        lhs, text = (s.strip() for s in text.split("~"))
        if lhs:
            raise FormulaError(f"the {what} {equation!r} should have no left-hand side (write '~ {text}')")
    if "|" in text:
        raise FormulaError(f"the {what} {equation!r} contains '|': random effects are given by `random=`, "
                           "not inside a level equation")
    return text or "1"


def term_product(a: str, b: str) -> str:
    if a == "1":
        return b
    if b == "1":
        return a
    return f"{a}:{b}"


def _key(name: str) -> str:
    return "1" if name in INTERCEPT_KEYS else str(name)


def _label(term: str) -> str:
    return "(Intercept)" if term == "1" else term


def _equations(lower_terms: list[str], upper: Mapping[str, str] | None, what: str) -> dict[str, list[str]]:
    """Each lower-level coefficient's upper-level terms ('~ 1' when it has no equation)."""
    upper = {} if upper is None else dict(upper)
    known = {_key(t) for t in lower_terms}
    out = {t: ["1"] for t in lower_terms}
    for name, equation in upper.items():
        key = _key(name)
        if key not in known:
            raise FormulaError(f"{what} equation for {name!r}, which is not a coefficient of the level below; "
                               f"its coefficients are: {', '.join(_label(t) for t in lower_terms)}")
        if not isinstance(equation, str):
            raise FormulaError(f"the {what} equation for {name!r} must be a formula string such as '~ sector'")
        out[key] = equation_terms(_rhs(equation, f"{what} equation for {name!r}"), f"{what} equation for {name!r}")
    return out


def _combine(lower_terms: list[str], equations: dict[str, list[str]]) -> list[tuple[str, str, str]]:
    """(combined term, lower coefficient, upper term) with the lower coefficients' own terms first, then
    the upper-level main effects, then the cross-level interactions (terms are sorted by degree)."""
    out = []
    for a in lower_terms:
        for b in equations[a]:
            out.append((term_product(a, b), a, b))
    seen, unique = set(), []
    for item in sorted(out, key=lambda it: (it[2] != "1", it[1] != "1")):
        if item[0] not in seen:
            seen.add(item[0])
            unique.append(item)
    return unique


def _random_expr(terms: list[str]) -> str:
    if "1" in terms:
        rest = [t for t in terms if t != "1"]
        return " + ".join(["1"] + rest)
    return " + ".join(["0"] + terms)


@dataclass(frozen=True)
class HlmSpec:
    """A model in level-equation form and the mixed-model formula it becomes."""

    response: str
    groups: tuple[str, ...]                      # level-2 grouping factor, then level 3's (inner to outer)
    level1: list[str]                            # level-1 terms ('1' = intercept)
    level2: dict[str, list[str]]                 # level-1 coefficient → its level-2 terms
    level3: dict[str, list[str]] | None          # two-level combined term → its level-3 terms
    random2: list[str]                           # level-1 coefficients with a level-2 random effect
    random3: list[str]                           # level-2 coefficients (two-level terms) random at level 3
    combined: list[tuple[str, tuple[str, ...]]]  # combined fixed term and its path of equation terms
    formula: str

    @property
    def levels(self) -> int:
        return 3 if self.level3 is not None else 2


def hlm_formula(level1: str, level2: Mapping[str, str] | None = None, group: str | Sequence[str] = None,
                level3: Mapping[str, str] | None = None, random: Sequence[str] | None = None,
                random3: Sequence[str] | None = None) -> HlmSpec:
    """The combined (mixed-model) formula of a model in level-equation form; see `hlm`."""
    if group is None:
        raise FormulaError("hlm() needs group=, the grouping column(s): 'school', or ['class', 'school'] "
                           "for three levels (inner to outer)")
    groups = (group,) if isinstance(group, str) else tuple(group)
    if len(groups) not in (1, 2):
        raise FormulaError(f"group= names one grouping column (two levels) or two (three levels); got {groups}")
    if len(groups) == 2 and level3 is None:
        level3 = {}
    if level3 is not None and len(groups) != 2:
        raise FormulaError("a level-3 model needs two grouping columns: group=['class', 'school'] (inner, outer)")
    if not isinstance(level1, str) or "~" not in level1:
        raise FormulaError(f"level1 must be a formula such as 'mathach ~ ses', got {level1!r}")
    response, rhs1 = (s.strip() for s in level1.split("~", 1))
    if not response:
        raise FormulaError(f"level1 {level1!r} has no response left of '~'")
    terms1 = equation_terms(_rhs("~ " + rhs1, "level-1 formula"), "level-1 formula")
    eq2 = _equations(terms1, level2, "level-2")
    two_level = _combine(terms1, eq2)
    random2 = list(terms1) if random is None else [_key(r) for r in random]
    for r in random2:
        if r not in terms1:
            raise FormulaError(f"random= names {r!r}, which is not a level-1 coefficient; "
                               f"they are: {', '.join(_label(t) for t in terms1)}")
    combined = [(c, (a, b)) for c, a, b in two_level]
    rand3: list[str] = []
    eq3 = None
    if level3 is not None:
        names2 = [c for c, _, _ in two_level]
        eq3 = _equations(names2, level3, "level-3")
        # by default each coefficient that varies over level-2 units also varies over level-3 units
        rand3 = list(random2) if random3 is None else [_key(r) for r in random3]
        for r in rand3:
            if r not in names2:
                raise FormulaError(f"random3= names {r!r}, which is not a level-2 coefficient; "
                                   f"they are: {', '.join(_label(t) for t in names2)}")
        combined = []
        for c3, c2, s in _combine(names2, eq3):
            path = next((a, b) for c, a, b in two_level if c == c2)
            combined.append((c3, path + (s,)))
    fixed = " + ".join(c for c, _ in combined)
    if all(c != "1" for c, _ in combined):
        fixed = "0 + " + fixed  # no intercept anywhere: keep the parser from adding one
    if not random2 and not rand3:
        raise FormulaError("the model has no random effect: give random= at least one level-1 coefficient")
    parts = []
    if len(groups) == 1:
        if random2:
            parts.append(f"({_random_expr(random2)} | {groups[0]})")
    else:
        inner, outer = groups
        e2 = _random_expr(random2) if random2 else None
        e3 = _random_expr(rand3) if rand3 else None
        if e2 is not None and e2 == e3:
            parts.append(f"({e2} | {outer}/{inner})")
        else:
            if e3 is not None:
                parts.append(f"({e3} | {outer})")
            if e2 is not None:
                parts.append(f"({e2} | {inner}:{outer})")
    formula = f"{response} ~ {fixed} + " + " + ".join(parts)
    return HlmSpec(response, groups, terms1, eq2, eq3, random2, rand3, combined, formula)


def check_level_variables(spec: HlmSpec, data: pd.DataFrame) -> None:
    """Warn when a variable of a level-2 (level-3) equation varies within a level-2 (level-3) unit."""
    def used(terms):
        return [v for t in terms if t != "1" for a in parse_terms(t, "term").atoms for v in variables(a)]

    checks = [(spec.groups[0] if spec.levels == 2 else list(spec.groups), spec.level2, "level-2")]
    if spec.level3 is not None:
        checks.append((spec.groups[1], spec.level3, "level-3"))
    for group, equations, what in checks:
        names = sorted({v for terms in equations.values() for v in used(terms)} & set(data.columns))
        for v in names:
            varies = data.groupby(group, observed=True)[v].nunique(dropna=True).max()
            if varies > 1:
                where = group if isinstance(group, str) else " × ".join(group)
                warn(f"{v!r} appears in a {what} equation but varies within {where}; a {what} variable "
                     f"should be constant within each unit (for a level-1 variable's group mean "
                     f"use hj.group_mean)", UserWarning)
