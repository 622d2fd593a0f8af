"""The multilevel (level-equation) form, contextual variables, and the classic methods side by side.

`hlm()` takes a model as the seeds write it, in Bryk & Raudenbush's notation:

    Level 1:  Y_ij  = β_0j + β_1j X_ij + r_ij
    Level 2:  β_0j  = γ_00 + γ_01 W_j + u_0j
              β_1j  = γ_10 + γ_11 W_j + u_1j

substitutes the level-2 equations into level 1 (Monette, "From the multilevel model to the
mixed model"), and fits the combined model

    Y_ij = γ_00 + γ_01 W_j + γ_10 X_ij + γ_11 X_ij W_j + u_0j + u_1j X_ij + r_ij

with `lmer("Y ~ 1 + X + W + X:W + (1 + X | group)")`. With three levels (π at level 1, β at
level 2, γ at level 3) the same substitution is made twice.

`group_mean`/`center_within` make the contextual (derived level-2) variable and the
within-group (CWG) variable; `hausman_test` compares the within- and between-group
effects; `compare_methods` puts the estimates of the seeds' classic methods in one table.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import stats as sps

from .design import DesignError, build_design
from .formula import FormulaError, Name, deparse, model_matrix, parse_formula, parse_terms, variables
from .inference.ddf import contrast_test
from .messages import warn
from .precision import float64
from .report import table_text
from .results import LmerModel, fit_design

INTERCEPT_KEYS = ("1", "(Intercept)", "Intercept")


# ---- the level equations -------------------------------------------------------------------------

def _terms(rhs: str, what: str) -> list[str]:
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


def _product(a: str, b: str) -> str:
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
        out[key] = _terms(_rhs(equation, f"{what} equation for {name!r}"), f"{what} equation for {name!r}")
    return out


def _combine(lower_terms: list[str], equations: dict[str, list[str]]) -> list[tuple[str, str, str]]:
    """(combined term, lower coefficient, upper term) with the lower coefficients' own terms first, then
    the upper-level main effects, then the cross-level interactions (terms are sorted by degree)."""
    out = []
    for a in lower_terms:
        for b in equations[a]:
            out.append((_product(a, b), a, b))
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
    terms1 = _terms(_rhs("~ " + rhs1, "level-1 formula"), "level-1 formula")
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


def _check_level_variables(spec: HlmSpec, data: pd.DataFrame) -> None:
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


class HlmModel(LmerModel):
    """A mixed model fitted from its level equations: an LmerModel plus the equations (`spec`)."""

    spec: HlmSpec

    @classmethod
    def from_fit(cls, model: LmerModel, spec: HlmSpec, data: pd.DataFrame) -> "HlmModel":
        obj = cls.__new__(cls)
        obj.__dict__.update(model.__dict__)
        obj.spec = spec
        obj._columns = _equation_columns(spec, data.loc[model.info.row_index])
        return obj

    # ---- γ notation --------------------------------------------------------------------------
    def _symbols(self):
        """Per fixed effect: (coefficient symbol, equation symbol, upper-level column path)."""
        return _gamma_symbols(self.spec, self._columns, list(self.fixef.index))

    def gammas(self) -> pd.DataFrame:
        """The fixed effects in level-equation notation: symbol (γ_00, ...), the equation it belongs to,
        the combined-model term, estimate, std_error and t statistic."""
        table = self.tidy()
        symbols = self._symbols()
        table.insert(0, "equation", [symbols[t][1] for t in table["term"]])
        table.insert(0, "coefficient", [symbols[t][0] for t in table["term"]])
        return table

    def equations(self) -> str:
        """The level equations and the combined model, as the seeds write them."""
        return _format_equations(self.spec, self._columns, self._symbols(), list(self.fixef.index))

    def summary(self) -> str:
        table = self.gammas()
        rows = [["", "equation", "term", "Estimate", "Std. Error", "t value"]]
        for _, r in table.iterrows():
            rows.append([r["coefficient"], r["equation"], r["term"], f"{r['estimate']:.4f}",
                         f"{r['std_error']:.4f}", f"{r['statistic']:.3f}"])
        head = (f"Hierarchical linear model ({self.spec.levels} levels), fitted as the combined mixed model\n\n"
                + self.equations() + "\n\nFixed effects in level-equation notation:\n"
                + table_text(rows, ["l", "l", "l", "r", "r", "r"]) + "\n\nThe combined model:\n")
        return head + super().summary()


def _sub(i) -> str:
    return "".join(str(x) for x in i)


def _equation_columns(spec: HlmSpec, frame: pd.DataFrame) -> dict:
    """Model-matrix column names of each equation's terms, keyed by (equation terms, term): a factor's
    coding (reduced or full rank) depends on whether its equation has an intercept, as in the combined model."""
    def columns(terms: list[str]) -> dict[str, list[str]]:
        out = {"1": ["1"]} if "1" in terms else {}
        rest = [t for t in terms if t != "1"]
        if not rest:
            return out
        rhs = ("1 + " if "1" in terms else "0 + ") + " + ".join(rest)
        try:
            _, mm = model_matrix(parse_terms(rhs, "equation"), frame)
            out.update({term: [mm.names[i] for i in idx] for term, idx in mm.term_columns.items() if term != "1"})
        except (FormulaError, DesignError, KeyError):
            pass
        for t in rest:
            out.setdefault(t, [t])
        return out

    equations = [tuple(spec.level1)] + [tuple(ts) for ts in spec.level2.values()]
    if spec.level3 is not None:
        equations += [tuple(ts) for ts in spec.level3.values()]
    return {eq: columns(list(eq)) for eq in set(equations)}


def _cols(cols: dict, terms: list[str]) -> list[str]:
    """Column names of an equation, in its terms' order."""
    table = cols.get(tuple(terms), {})
    return [c for t in terms for c in table.get(t, [t])]


def _term_of(cols: dict, terms: list[str], column: str) -> str:
    table = cols.get(tuple(terms), {})
    return next(t for t in terms if column in table.get(t, [t]))


def _join(*names: str) -> str:
    parts = [n for n in names if n != "1"]
    return ":".join(parts) if parts else "(Intercept)"


def _gamma_symbols(spec: HlmSpec, cols: dict, fixef: list[str]) -> dict[str, tuple[str, str, tuple]]:
    """Map each fixed effect name to (symbol, equation, column path); unmatched names keep their own."""
    out = {}
    l1 = _cols(cols, spec.level1)
    for p, a in enumerate(l1):
        term_a = _term_of(cols, spec.level1, a)
        eq2 = spec.level2[term_a]
        for q, b in enumerate(_cols(cols, eq2)):
            if spec.levels == 2:
                out[_join(a, b)] = (f"γ_{_sub((p, q))}", f"β_{p}", (a, b))
                continue
            c2_term = _product(term_a, _term_of(cols, eq2, b))
            eq3 = spec.level3.get(c2_term, ["1"])
            for s_, w in enumerate(_cols(cols, eq3)):
                out[_join(a, b, w)] = (f"γ_{_sub((p, q, s_))}", f"β_{p}{q}", (a, b, w))
    matched = {}
    for name in fixef:
        if name in out:
            matched[name] = out[name]
            continue
        # an interaction's factors may come in another order: match on the set of parts
        parts = sorted(name.split(":"))
        hit = next((v for k, v in out.items() if sorted(k.split(":")) == parts), None)
        matched[name] = hit if hit is not None else (name, "", (name,))
    return matched


def _format_equations(spec: HlmSpec, cols: dict, symbols: dict, fixef: list[str]) -> str:
    y = spec.response
    lines = []
    l1 = _cols(cols, spec.level1)
    random_cols2 = {c for t in spec.random2 for c in cols[tuple(spec.level1)].get(t, [t])}
    if spec.levels == 2:
        g = spec.groups[0]
        sub1, sub2 = "ij", "j"
        first = " + ".join((f"β_{p}{sub2}" if a == "1" else f"β_{p}{sub2}·{a}_{sub1}") for p, a in enumerate(l1))
        lines.append(f"Level 1 (observation i in {g} j):")
        lines.append(f"  {y}_{sub1} = {first} + r_{sub1}")
        lines.append(f"Level 2 ({g} j):")
        by_eq: dict[str, list] = {}
        for name in fixef:
            sym, eq, path = symbols[name]
            by_eq.setdefault(eq, []).append((sym, path))
        for p, a in enumerate(l1):
            pieces = [sym if path[-1] == "1" else f"{sym}·{path[-1]}_{sub2}" for sym, path in by_eq.get(f"β_{p}", [])]
            u = f" + u_{p}{sub2}" if a in random_cols2 else ""
            lines.append(f"  β_{p}{sub2} = {' + '.join(pieces) if pieces else '0'}{u}")
        fixed = " + ".join(_product_text(symbols[n], sub1, sub2, None) for n in fixef)
        rand = " + ".join((f"u_{p}{sub2}" if a == "1" else f"u_{p}{sub2}·{a}_{sub1}")
                          for p, a in enumerate(l1) if a in random_cols2)
        lines.append("Combined (mixed) model:")
        lines.append(f"  {y}_{sub1} = {fixed}" + (f" + {rand}" if rand else "") + f" + r_{sub1}")
    else:
        inner, outer = spec.groups
        sub1, sub2, sub3 = "ijk", "jk", "k"
        first = " + ".join((f"π_{p}{sub2}" if a == "1" else f"π_{p}{sub2}·{a}_{sub1}") for p, a in enumerate(l1))
        lines.append(f"Level 1 (observation i in {inner} j in {outer} k):")
        lines.append(f"  {y}_{sub1} = {first} + e_{sub1}")
        lines.append(f"Level 2 ({inner} j in {outer} k):")
        random3 = set(spec.random3)
        for p, a in enumerate(l1):
            term_a = _term_of(cols, spec.level1, a)
            l2 = _cols(cols, spec.level2[term_a])
            pieces = [(f"β_{p}{q}{sub3}" if b == "1" else f"β_{p}{q}{sub3}·{b}_{sub2}") for q, b in enumerate(l2)]
            r = f" + r_{p}{sub2}" if a in random_cols2 else ""
            lines.append(f"  π_{p}{sub2} = {' + '.join(pieces)}{r}")
        lines.append(f"Level 3 ({outer} k):")
        by_eq = {}
        for name in fixef:
            sym, eq, path = symbols[name]
            by_eq.setdefault(eq, []).append((sym, path))
        rand = [("r", f"{p}", a, "1") for p, a in enumerate(l1) if a in random_cols2]
        for p, a in enumerate(l1):
            term_a = _term_of(cols, spec.level1, a)
            eq2 = spec.level2[term_a]
            for q, b in enumerate(_cols(cols, eq2)):
                pieces = [sym if path[-1] == "1" else f"{sym}·{path[-1]}_{sub3}"
                          for sym, path in by_eq.get(f"β_{p}{q}", [])]
                c2_term = _product(term_a, _term_of(cols, eq2, b))
                u = f" + u_{p}{q}{sub3}" if c2_term in random3 else ""
                if u:
                    rand.append(("u", f"{p}{q}", a, b))
                lines.append(f"  β_{p}{q}{sub3} = {' + '.join(pieces) if pieces else '0'}{u}")
        lines.append("Combined (mixed) model:")
        fixed = " + ".join(_product_text(symbols[n], sub1, sub2, sub3) for n in fixef)
        random_text = " + ".join(
            "·".join([f"{letter}_{idx}{sub2 if letter == 'r' else sub3}"]
                     + ([f"{a}_{sub1}"] if a != "1" else []) + ([f"{b}_{sub2}"] if b != "1" else []))
            for letter, idx, a, b in sorted(rand, key=lambda r: r[0] != "u"))
        lines.append(f"  {y}_{sub1} = {fixed}" + (f" + {random_text}" if random_text else "") + f" + e_{sub1}")
    lines.append(f"lme4 formula: {spec.formula}")
    return "\n".join(lines)


def _product_text(symbol, sub1, sub2, sub3) -> str:
    sym, _, path = symbol
    subs = [sub1, sub2, sub3]
    factors = [f"{c}_{subs[k]}" for k, c in enumerate(path) if c != "1" and subs[k] is not None]
    return "·".join([sym] + factors)


@float64
def hlm(level1: str, level2: Mapping[str, str] | None = None, group: str | Sequence[str] | None = None,
        data: pd.DataFrame | None = None, level3: Mapping[str, str] | None = None,
        random: Sequence[str] | None = None, random3: Sequence[str] | None = None, REML: bool = True,
        max_iter: int = 200) -> HlmModel:
    """Fit a model written as level equations (Bryk & Raudenbush), as its combined mixed model.

        hj.hlm(level1="mathach ~ ses",
               level2={"(Intercept)": "~ sector", "ses": "~ sector"},
               group="school", data=hsb)

    fits `mathach ~ 1 + ses + sector + ses:sector + (1 + ses | school)`, the same model as
    `hj.lmer("mathach ~ ses * sector + (ses | school)", hsb)`.

    level1   the level-1 (within-unit) regression, response ~ level-1 variables.
    level2   per level-1 coefficient ("(Intercept)" or a level-1 term), its level-2 equation
             "~ W1 + W2" (level-2 variables); a coefficient without an equation gets "~ 1".
    group    the level-2 grouping column; for three levels [level-2 column, level-3 column],
             e.g. ["class", "school"] for students in classes in schools (classes may reuse labels
             across schools: they are nested within the level-3 column).
    level3   per level-2 coefficient (named as the two-level model's fixed effect, e.g.
             "(Intercept)", "ses", "W1", "ses:W1"), its level-3 equation.
    random   level-1 coefficients whose level-2 equation has a random part u (default: all of
             them); leave a coefficient out for a non-random slope.
    random3  level-2 coefficients with a level-3 random part (default: the level-2 intercepts of
             the coefficients in `random`).
    """
    if data is None:
        raise DesignError("hlm() needs data=, a pandas DataFrame")
    spec = hlm_formula(level1, level2, group, level3, random, random3)
    _check_level_variables(spec, data)
    design = build_design(spec.formula, data)
    model = fit_design(design, REML, max_iter)
    return HlmModel.from_fit(model, spec, data)


# ---- contextual variables ------------------------------------------------------------------------

def _group_keys(data: pd.DataFrame, group: str | Sequence[str]) -> list[str]:
    keys = [group] if isinstance(group, str) else list(group)
    missing = [k for k in keys if k not in data.columns]
    if missing:
        raise DesignError(f"column {missing[0]!r} is not in the data (columns: {', '.join(map(str, data.columns))})")
    return keys


def group_mean(data: pd.DataFrame, variable: str, group: str | Sequence[str], name: str | None = None) -> pd.Series:
    """Each row's group mean of `variable` (a contextual, derived level-2 variable; Monette's capply(x, g, mean)).

    Missing values are left out of the means; a row whose group has no values gets NaN.
        hsb["ses_mean"] = hj.group_mean(hsb, "ses", "school")
    """
    keys = _group_keys(data, group)
    if variable not in data.columns:
        raise DesignError(f"column {variable!r} is not in the data")
    if not pd.api.types.is_numeric_dtype(data[variable]) or data[variable].dtype == bool:
        values = data[variable].astype(float)
    else:
        values = data[variable]
    out = values.groupby([data[k] for k in keys], observed=True, dropna=False).transform("mean")
    return out.rename(name or f"{variable}_mean")


def center_within(data: pd.DataFrame, variable: str, group: str | Sequence[str], name: str | None = None) -> pd.Series:
    """`variable` centred within groups (CWG): its deviation from its group mean.
        hsb["ses_cwg"] = hj.center_within(hsb, "ses", "school")
    """
    mean = group_mean(data, variable, group)
    return (data[variable].astype(float) - mean).rename(name or f"{variable}_cwg")


# ---- within versus between: the Hausman-type comparison ------------------------------------------

@dataclass
class HausmanResult:
    """Within- vs between-group effect of one variable: the estimates, and two tests that they are equal.

    `table`: the within (fixed-effects OLS), random-effects (mixed model), and, from the mixed model
    with the contextual group mean, the within, between and contextual (= between − within) effects.
    `hausman`: (b_FE − b_RE)² / (V_FE − V_RE) ~ χ²(1) (Hausman 1978).
    `contextual`: t test of the group-mean coefficient (Mundlak's form), Satterthwaite df.
    """

    variable: str
    group: str
    table: pd.DataFrame
    hausman: dict
    contextual: dict
    model: LmerModel = field(repr=False)
    contextual_model: LmerModel = field(repr=False)

    def __str__(self) -> str:
        t = self.table
        rows = [["", "Estimate", "Std. Error"]] + [[k, f"{r['estimate']:.4f}", f"{r['std_error']:.4f}"]
                                                   for k, r in t.iterrows()]
        h, c = self.hausman, self.contextual
        return (f"Within vs between {self.group} effect of {self.variable}\n"
                + table_text(rows, ["l", "r", "r"])
                + (f"\nHausman test (fixed vs random effects): chisq = {h['statistic']:.3f}, df = {h['df']}, "
                   f"p = {h['p_value']:.4g}" if np.isfinite(h["statistic"]) else
                   "\nHausman test (fixed vs random effects): not defined here, the random-effects estimate is "
                   "not more precise than the within one (V_FE − V_RE ≤ 0); use the contextual test")
                + f"\nContextual effect (between − within): {c['estimate']:.4f} (SE {c['std_error']:.4f}), "
                  f"t = {c['statistic']:.3f}, df = {c['df']:.1f}, p = {c['p_value']:.4g}\n")

    __repr__ = __str__


def _ols(X: np.ndarray, y: np.ndarray):
    beta, *_ = np.linalg.lstsq(X, y, rcond=None)
    resid = y - X @ beta
    df = len(y) - np.linalg.matrix_rank(X)
    s2 = float(resid @ resid / df) if df > 0 else np.nan
    cov = s2 * np.linalg.pinv(X.T @ X)
    return beta, cov, df, s2


def within_estimator(frame: pd.DataFrame, response: str, columns: list[str], group: str):
    """Fixed-effects (dummy-variable) OLS: y and X demeaned within groups; df = n − G − k."""
    keys = frame[group]
    y = frame[response].astype(float)
    Xw = np.column_stack([(frame[c] - frame[c].groupby(keys).transform("mean")).to_numpy(float) for c in columns])
    yw = (y - y.groupby(keys).transform("mean")).to_numpy(float)
    beta, *_ = np.linalg.lstsq(Xw, yw, rcond=None)
    resid = yw - Xw @ beta
    G = keys.nunique()
    df = len(yw) - G - np.linalg.matrix_rank(Xw)
    s2 = float(resid @ resid / df)
    cov = s2 * np.linalg.pinv(Xw.T @ Xw)
    return beta, cov, df


@float64
def hausman_test(formula: str, data: pd.DataFrame, variable: str, group: str | None = None,
                 REML: bool = True) -> HausmanResult:
    """Do the within- and between-group effects of `variable` differ? (Monette: "First diagnostics:
    Hausman test"; "Contextual variables to the rescue".)

        hj.hausman_test("mathach ~ ses + (1 | school)", hsb, "ses")

    Fits the mixed model `formula`, and the same model with the group mean of `variable` added
    (the contextual variable); `group` defaults to the formula's (first) grouping factor.
    """
    parsed = parse_formula(formula)
    if group is None:
        group = parsed.random[0].group[0] if len(parsed.random[0].group) == 1 else None
        if group is None:
            raise DesignError("give group=: the formula's grouping factor is an interaction")
    model = fit_design(build_design(formula, data), REML)
    frame = data.loc[model.info.row_index].copy()
    mean_name = f"{variable}_mean"
    while mean_name in frame.columns:
        mean_name += "_"
    frame[mean_name] = group_mean(frame, variable, group)
    fixed_part = parsed.fixed
    random_part = " + ".join(t.text for t in parsed.random)
    ctx_formula = f"{parsed.response} ~ {fixed_part} + {deparse(Name(mean_name))} + {random_part}"
    ctx = fit_design(build_design(ctx_formula, frame), REML)
    names = list(ctx.fixef.index)
    if variable not in names:
        raise DesignError(f"{variable!r} must be a numeric fixed effect of the formula (fixed effects: {', '.join(names)})")
    b, V = ctx.fixef, ctx.vcov
    within, contextual = b[variable], b[mean_name]
    between = within + contextual
    se_between = float(np.sqrt(V.loc[variable, variable] + V.loc[mean_name, mean_name]
                               + 2 * V.loc[variable, mean_name]))
    # the fixed-effects (within) OLS estimate of all level-1 columns of the model
    level1 = [c for c in model.info.fixed_names if c != "(Intercept)"]
    X = pd.DataFrame(model.info.X, index=frame.index, columns=list(model.info.fixed_names))
    Xf = pd.concat([X[level1], frame[[group]], pd.Series(model.info.y, index=frame.index, name="__y")], axis=1)
    varies = [c for c in level1 if Xf.groupby(group)[c].nunique().max() > 1]
    beta_fe, cov_fe, df_fe = within_estimator(Xf, "__y", varies, group)
    j = varies.index(variable)
    b_fe, v_fe = float(beta_fe[j]), float(cov_fe[j, j])
    b_re, v_re = float(model.fixef[variable]), float(model.vcov.loc[variable, variable])
    diff_var = v_fe - v_re
    chisq = (b_fe - b_re) ** 2 / diff_var if diff_var > 0 else np.nan
    hausman = {"statistic": chisq, "df": 1, "p_value": float(sps.chi2.sf(chisq, 1)) if np.isfinite(chisq) else np.nan,
               "within": b_fe, "random_effects": b_re}
    L = np.zeros(len(names))
    L[names.index(mean_name)] = 1.0
    ctx_test = contrast_test(ctx, L, "satterthwaite")
    table = pd.DataFrame(
        [(b_fe, np.sqrt(v_fe)), (b_re, np.sqrt(v_re)), (within, np.sqrt(V.loc[variable, variable])),
         (between, se_between), (contextual, np.sqrt(V.loc[mean_name, mean_name]))],
        index=["within (fixed-effects OLS)", "mixed model", "within (mixed + group mean)",
               "between (mixed + group mean)", "contextual = between - within"],
        columns=["estimate", "std_error"])
    return HausmanResult(variable, group, table, hausman, ctx_test, model, ctx)


# ---- the classic methods side by side ------------------------------------------------------------

@float64
def compare_methods(formula: str, group: str, data: pd.DataFrame, REML: bool = True,
                    random_slope: bool = True) -> pd.DataFrame:
    """The slope of y on x estimated by each method of the seeds (London schools; Monette's Methods 1-6):

        pooled OLS                    lm(y ~ x): all rows together, schools ignored
        between groups (ecological)   lm(ȳ_g ~ x̄_g): one row per group, equal weights
        per-group OLS, averaged       mean of the per-group slopes; SE from the within-group residual
                                      variance only (a fixed-effects model: generalises to these groups)
        two-stage (derived variables) the same mean; SE = sd of the slopes / √G (generalises to new groups)
        fixed effects (within)        lm(y ~ x + group): one common within-group slope
        mixed model                   lmer(y ~ x + (x | group))  (random_slope=False: (1 | group))
        mixed + group mean: within    lmer(y ~ x + x̄_g + ...): the within-group slope
        mixed + group mean: between   ... its between-group slope (x + x̄_g coefficients)

    Columns: estimate, std_error, sd (spread of the per-group slopes), n (rows or groups used),
    estimates (which effect the method estimates).
    """
    if not isinstance(formula, str) or "~" not in formula or "|" in formula:
        raise FormulaError(f"compare_methods needs a formula 'y ~ x' without random terms, got {formula!r}")
    y_name, rhs = (s.strip() for s in formula.split("~", 1))
    terms = [t for t in _terms(rhs, "formula") if t != "1"]
    if len(terms) != 1 or not re.fullmatch(r"[A-Za-z_.][A-Za-z0-9_.]*", terms[0]):
        raise FormulaError(f"compare_methods compares the slope of one numeric column: 'y ~ x', got {formula!r}")
    x_name = terms[0]
    for c in (y_name, x_name, group):
        if c not in data.columns:
            raise DesignError(f"column {c!r} is not in the data (columns: {', '.join(map(str, data.columns))})")
    frame = data[[y_name, x_name, group]].dropna().copy()
    y = frame[y_name].to_numpy(float)
    x = frame[x_name].to_numpy(float)
    n = len(frame)
    rows = []

    # 1. pooled OLS
    beta, cov, _, _ = _ols(np.column_stack([np.ones(n), x]), y)
    rows.append(("pooled OLS", beta[1], np.sqrt(cov[1, 1]), np.nan, n, "marginal: a mix of within and between"))

    # 2. between groups
    means = frame.groupby(group, observed=True)[[y_name, x_name]].mean()
    G = len(means)
    beta, cov, _, _ = _ols(np.column_stack([np.ones(G), means[x_name].to_numpy(float)]), means[y_name].to_numpy(float))
    rows.append(("between groups (OLS on group means)", beta[1], np.sqrt(cov[1, 1]), np.nan, G,
                 "between (ecological)"))

    # 3./4. per-group OLS
    slopes, sxx, rss, df_resid = [], [], 0.0, 0
    for _, d in frame.groupby(group, observed=True):
        xg, yg = d[x_name].to_numpy(float), d[y_name].to_numpy(float)
        if len(xg) < 2 or np.ptp(xg) == 0:
            continue  # the slope cannot be estimated in this group
        xc = xg - xg.mean()
        s = float(xc @ xc)
        b = float(xc @ (yg - yg.mean()) / s)
        slopes.append(b)
        sxx.append(s)
        r = yg - yg.mean() - b * xc
        rss += float(r @ r)
        df_resid += len(xg) - 2
    slopes = np.asarray(slopes)
    Gs = len(slopes)
    sd = float(np.std(slopes, ddof=1))
    s2_within = rss / df_resid if df_resid > 0 else np.nan
    se_fixed = float(np.sqrt(s2_within * np.sum(1.0 / np.asarray(sxx))) / Gs)
    rows.append(("per-group OLS, averaged", slopes.mean(), se_fixed, sd, Gs,
                 "within, groups weighted equally (SE: within-group variation only)"))
    rows.append(("two-stage (derived variables)", slopes.mean(), sd / np.sqrt(Gs), sd, Gs,
                 "within, groups weighted equally (SE: between-group variation of the slopes)"))

    # 5. fixed effects (within) OLS
    beta, cov, _ = within_estimator(frame, y_name, [x_name], group)
    rows.append(("fixed effects (group dummies)", beta[0], np.sqrt(cov[0, 0]), np.nan, n, "within"))

    # 6. mixed model, and 7. with the contextual group mean
    random = f"({x_name} | {group})" if random_slope else f"(1 | {group})"
    m = fit_design(build_design(f"{y_name} ~ {x_name} + {random}", frame), REML)
    rows.append(("mixed model", m.fixef[x_name], m.std_errors[x_name], np.nan, n,
                 "mostly within; assumes between = within"))
    mean_name = f"{x_name}_mean"
    while mean_name in frame.columns:
        mean_name += "_"
    frame[mean_name] = group_mean(frame, x_name, group)
    mc = fit_design(build_design(f"{y_name} ~ {x_name} + {mean_name} + {random}", frame), REML)
    V = mc.vcov
    rows.append(("mixed + group mean: within", mc.fixef[x_name], mc.std_errors[x_name], np.nan, n, "within"))
    se_b = np.sqrt(V.loc[x_name, x_name] + V.loc[mean_name, mean_name] + 2 * V.loc[x_name, mean_name])
    rows.append(("mixed + group mean: between", mc.fixef[x_name] + mc.fixef[mean_name], se_b, np.nan, n, "between"))
    table = pd.DataFrame(rows, columns=["method", "estimate", "std_error", "sd", "n", "estimates"]).set_index("method")
    table["estimate"] = table["estimate"].astype(float)
    table["std_error"] = table["std_error"].astype(float)
    table.attrs["formula"] = formula
    table.attrs["group"] = group
    return table
