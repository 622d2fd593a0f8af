"""lme4 formula syntax → response, fixed-effects formula and random-effect terms.

`y ~ x + (1 + x | g) + (0 + z || h) + (1 | a/b)` is split at top-level `+` signs;
parenthesised pieces with a `|` are random terms, the rest is handed to formulaic.
"""
from __future__ import annotations

import re
from dataclasses import dataclass


class FormulaError(ValueError):
    """A formula that cannot be parsed; the message shows where."""


@dataclass(frozen=True)
class RandomTerm:
    """One `(expr | group)` term: its model-matrix expression and grouping factor.

    `group` is a tuple of column names whose interaction is the grouping factor
    (`("a", "b")` for `a:b`); `correlated` is False for terms split from `||`.
    """

    expr: str
    group: tuple[str, ...]
    correlated: bool = True

    @property
    def group_name(self) -> str:
        """lme4's name of the grouping factor, e.g. `cask:batch` for `batch/cask`."""
        return ":".join(self.group)


@dataclass(frozen=True)
class ParsedFormula:
    """The pieces of an lme4 formula."""

    response: str
    fixed: str
    random: tuple[RandomTerm, ...]

    @property
    def fixed_formula(self) -> str:
        return f"{self.response} ~ {self.fixed}"


def parse_formula(formula: str) -> ParsedFormula:
    """Split an lme4 formula into its response, fixed part and random terms."""
    if not isinstance(formula, str):
        raise FormulaError(f"formula must be a string, got {type(formula).__name__}")
    _check_parentheses(formula)
    if formula.count("~") != 1:
        raise FormulaError(_point(formula, formula.find("~") if "~" in formula else len(formula),
                                  "a formula needs exactly one '~' between response and predictors"))
    lhs, rhs = (s.strip() for s in formula.split("~"))
    if not lhs:
        raise FormulaError(_point(formula, 0, "missing response left of '~'"))
    if not rhs:
        raise FormulaError(_point(formula, len(formula), "missing predictors right of '~'"))
    fixed_pieces, random_terms = [], []
    offset = formula.index("~") + 1
    for piece, start in _split_top_level(rhs, "+"):
        term = _random_piece(piece)
        if term is None:
            fixed_pieces.append(piece)
            continue
        expr, bars, group = term
        if not expr.strip():
            raise FormulaError(_point(formula, offset + start, "random term has nothing left of '|'"))
        groups = _expand_group(group, formula, offset + start)
        for g in groups:
            random_terms.append(RandomTerm(expr.strip(), g, correlated=bars == "|"))
    if not random_terms:
        raise FormulaError(
            "the formula has no random-effects term such as (1 | group); "
            "for a model without random effects use ordinary least squares (e.g. statsmodels.formula.api.ols)"
        )
    fixed = " + ".join(fixed_pieces) if fixed_pieces else "1"
    return ParsedFormula(lhs, fixed, tuple(random_terms))


def _check_parentheses(formula: str) -> None:
    depth = 0
    for i, ch in enumerate(formula):
        depth += (ch == "(") - (ch == ")")
        if depth < 0:
            raise FormulaError(_point(formula, i, "unmatched ')'"))
    if depth:
        raise FormulaError(_point(formula, formula.rfind("("), "unclosed '('"))


def _point(formula: str, pos: int, message: str) -> str:
    """A message with the formula and a caret under position `pos`."""
    return f"{message}\n  {formula}\n  {' ' * max(pos, 0)}^"


def _split_top_level(text: str, sep: str):
    """Yield (piece, start) for `text` split at `sep` outside parentheses."""
    depth, start = 0, 0
    for i, ch in enumerate(text):
        depth += (ch == "(") - (ch == ")")
        if ch == sep and depth == 0:
            yield text[start:i].strip(), start
            start = i + 1
    yield text[start:].strip(), start


def _random_piece(piece: str):
    """(expr, '|' or '||', group) when `piece` is `( ... | ... )`, else None."""
    if not (piece.startswith("(") and piece.endswith(")")):
        return None
    inner = piece[1:-1]
    depth = 0
    for i, ch in enumerate(inner):
        depth += (ch == "(") - (ch == ")")
        if depth < 0:
            return None  # e.g. "(a) + (b)" is not a single parenthesised piece
        if ch == "|" and depth == 0:
            bars = "||" if inner[i + 1 : i + 2] == "|" else "|"
            return inner[:i], bars, inner[i + len(bars):].strip()
    return None


_NAME = re.compile(r"^[A-Za-z_.][A-Za-z0-9_.]*$")


def _expand_group(group: str, formula: str, pos: int) -> list[tuple[str, ...]]:
    """`a/b/c` → [(a,), (b, a), (c, b, a)] (lme4 names them a, b:a, c:b:a); `a:b` → [(a, b)]."""
    if not group:
        raise FormulaError(_point(formula, pos, "random term has no grouping factor right of '|'"))
    nested = [part.strip() for part in group.split("/")]
    out, prefix = [], ()
    for part in nested:
        names = tuple(n.strip() for n in part.split(":"))
        bad = [n for n in names if not _NAME.match(n)]
        if bad:
            raise FormulaError(_point(formula, pos, f"grouping factor {bad[0]!r} must be a column name"))
        prefix = names + prefix
        out.append(prefix)
    return out
