"""`hlm()` and its fitted model: the combined fit reported in the level-equation notation (γ, β, π)."""
from __future__ import annotations

from typing import Mapping, Sequence

import pandas as pd

from ..design import DesignError, build_design
from ..formula import FormulaError, model_matrix, parse_terms
from ..precision import float64
from ..report import table_text, with_timing
from ..results import LmerModel, fit_design
from .equations import HlmSpec, check_level_variables, hlm_formula, term_product


class HlmModel(LmerModel):
    """A mixed model fitted from its level equations: an LmerModel plus the equations (`spec`); its `timing`
    is the whole `hlm` call's."""

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
            c2_term = term_product(term_a, _term_of(cols, eq2, b))
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
                c2_term = term_product(term_a, _term_of(cols, eq2, b))
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


@with_timing
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
    check_level_variables(spec, data)
    design = build_design(spec.formula, data)
    model = fit_design(design, REML, max_iter)
    return HlmModel.from_fit(model, spec, data)
