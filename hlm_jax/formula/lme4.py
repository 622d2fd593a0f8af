"""lme4's formula forms: `y ~ x + (1 + x | g) + (0 + z || h) + (1 | a/b)`, lmList's `y ~ x | g`,
and bare right-hand sides (the level equations of `hlm`). All go through one parser (`parse.Parser`)."""
from __future__ import annotations

import functools
from dataclasses import dataclass

from .parse import COVARIANCE_CALLS, BinOp, Call, FormulaError, Name, Neg, Num, Paren, Parser, bounded, deparse, point
from .terms import Terms, expand
from .transforms import variables


@dataclass(frozen=True)
class RandomTerm:
    """One `(expr | group)` term: its model-matrix expression and grouping factor.

    `group` is a tuple of column names whose interaction is the grouping factor
    (`("a", "b")` for `a:b`); `correlated` is False for terms split from `||`; `covariance` names
    the term's covariance structure (`diag(x | g)` → "diag"; unstructured by default).
    """

    expr: str
    group: tuple[str, ...]
    correlated: bool = True
    terms: Terms | None = None
    covariance: str = "us"

    @property
    def group_name(self) -> str:
        """lme4's name of the grouping factor, e.g. `cask:batch` for `batch/cask`."""
        return ":".join(self.group)

    @property
    def text(self) -> str:
        """The term as formula text, e.g. `(1 + Days | Subject)`."""
        bars = "|" if self.correlated else "||"
        return f"({self.expr} {bars} {':'.join(deparse(Name(g)) for g in self.group)})"


@dataclass(frozen=True)
class ParsedFormula:
    """The pieces of an lme4 formula: response (its text and node), fixed part and random terms."""

    response: str
    fixed: str
    random: tuple[RandomTerm, ...]
    response_node: object = None
    fixed_terms: Terms | None = None

    @property
    def fixed_formula(self) -> str:
        return f"{self.response} ~ {self.fixed}"

    @property
    def response_variables(self) -> list[str]:
        return list(dict.fromkeys(variables(self.response_node)))

    @property
    def variables(self) -> list[str]:
        """Every data column the formula reads: response, fixed part, random terms and groups."""
        names = list(self.response_variables)
        names += [v for a in self.fixed_terms.atoms + [o for o in self.fixed_terms.offsets] for v in variables(a)]
        for t in self.random:
            names += [v for a in t.terms.atoms for v in variables(a)] + list(t.group)
        return list(dict.fromkeys(names))


PARSED_CACHE = 256  # parsed formulas kept, by their text (the parse is immutable: frozen syntax trees and terms)


def parse_formula(formula: str, require_random: bool = True) -> ParsedFormula:
    """Split an lme4 formula into its response, fixed part and random terms (nothing is evaluated);
    `require_random=False` accepts a formula without random terms (hj.lm). Parses are kept by text
    (a formula that fails raises again on every call)."""
    if not isinstance(formula, str):
        return _parse_formula(formula, bool(require_random))
    return _cached_parse(formula, bool(require_random))


@functools.lru_cache(maxsize=PARSED_CACHE)
def _cached_parse(formula: str, require_random: bool) -> ParsedFormula:
    """`_parse_formula`, kept for the last PARSED_CACHE formula texts."""
    return _parse_formula(formula, require_random)


@bounded
def _parse_formula(formula: str, require_random: bool) -> ParsedFormula:
    """The parse behind `parse_formula`."""
    parser, lhs, rhs = _sides(formula)
    fixed_pieces, random_terms = [], []
    pieces = [("+", rhs)] if _is_bar(rhs) else _signed_pieces(rhs, "+")
    for sign, piece in pieces:
        bar = piece.inner if isinstance(piece, Paren) and _is_bar(piece.inner) else piece
        covariance = "us"
        if isinstance(bar, Call) and bar.func in COVARIANCE_CALLS:
            covariance, bar = bar.func, bar.args[0]
        if not _is_bar(bar):
            fixed_pieces.append((sign, piece))
            continue
        if sign != "+":
            raise FormulaError(f"a random-effects term cannot be subtracted: {deparse(piece)}")
        terms = expand(bar.left, "random-effects term")
        for group in _groups(bar.right, formula):
            random_terms.append(RandomTerm(deparse(bar.left), group, bar.op == "|", terms, covariance))
    if not random_terms and require_random:
        raise FormulaError(
            "the formula has no random-effects term such as (1 | group); "
            "for a model without random effects use hj.lm (ordinary least squares)"
        )
    fixed_node = _join(fixed_pieces)
    fixed_terms = expand(fixed_node, "fixed part")
    return ParsedFormula(deparse(lhs), deparse(fixed_node), tuple(random_terms), lhs, fixed_terms)


@bounded
def parse_lmlist(formula: str) -> tuple[object, Terms, tuple[str, ...]]:
    """lmList's 'y ~ x1 + x2 | g' → (response node, terms of the predictors, grouping columns)."""
    _, lhs, rhs = _sides(formula)
    if not _is_bar(rhs) or rhs.op != "|":
        raise FormulaError(f"lmlist needs a formula 'response ~ predictors | group', with one '|' outside "
                           f"parentheses; got {formula!r}")
    groups = _groups(rhs.right, formula)
    if len(groups) != 1:
        raise FormulaError(f"lmlist's grouping factor must be column names joined by ':', got {deparse(rhs.right)!r}")
    terms = expand(rhs.left, "predictors")
    if not terms.terms and not terms.intercept:
        raise FormulaError(f"lmlist needs at least one predictor or the intercept: {formula!r}")
    return lhs, terms, groups[0]


@bounded
def parse_terms(rhs: str, what: str) -> Terms:
    """The terms of a bare right-hand side such as 'meanses + sector' (a level equation)."""
    parser = Parser(rhs)
    if parser.tok.kind == "end":
        raise FormulaError(f"the {what} is empty")
    node = parser.bars()
    parser.expect_end("the end of the " + what)
    return expand(node, what)


def _sides(formula: str):
    """Parse `lhs ~ rhs`: exactly one '~', both sides present; the response is an expression of columns."""
    parser = Parser(formula)
    tildes = [t for t in parser.tokens if t.text == "~"]
    if len(tildes) != 1:
        pos = tildes[1].pos if tildes else len(formula)
        raise FormulaError(point(formula, pos, "a formula needs exactly one '~' between response and predictors"))
    if parser.tok.text == "~":
        raise FormulaError(point(formula, 0, "missing response left of '~'"))
    lhs = parser.arith()  # R evaluates the response as an expression: y1 + y2 is their sum
    if not parser.take("~"):
        raise parser.unexpected("'~'")
    if parser.tok.kind == "end":
        raise FormulaError(point(formula, len(formula), "missing predictors right of '~'"))
    rhs = parser.bars()
    parser.expect_end("'+' or the end of the formula")
    _check_response(lhs)
    return parser, lhs, rhs


def _check_response(node) -> None:
    """A column or an expression of columns; `cbind(successes, failures)` passes here for glmer (lmer
    refuses it)."""
    if isinstance(node, Call) and node.func in ("offset", "weights"):
        raise FormulaError(f"{node.func}() cannot be the response")


def _is_bar(node) -> bool:
    return isinstance(node, BinOp) and node.op in ("|", "||")


def _signed_pieces(node, sign: str) -> list:
    """A sum a + b - c split into [('+', a), ('+', b), ('-', c)] (parentheses kept)."""
    if isinstance(node, BinOp) and node.op in ("+", "-"):
        flip = {"+": "-", "-": "+"}
        right_sign = sign if node.op == "+" else flip[sign]
        return _signed_pieces(node.left, sign) + _signed_pieces(node.right, right_sign)
    if isinstance(node, Neg):
        return [({"+": "-", "-": "+"}[sign], node.operand)]
    return [(sign, node)]


def _join(pieces: list):
    """Signed pieces back into one node (`1` when there are none)."""
    node = None
    for sign, piece in pieces:
        if node is None:
            node = piece if sign == "+" else Neg(piece)
        else:
            node = BinOp(sign, node, piece)
    return Num(1.0) if node is None else node


def _groups(node, formula: str) -> list[tuple[str, ...]]:
    """`a/b/c` → [(a,), (b, a), (c, b, a)] (lme4 names them a, b:a, c:b:a); `a:b` → [(a, b)]."""
    nested = _flatten(node, "/")
    out, prefix = [], ()
    for part in nested:
        names = tuple(_group_name(n, formula) for n in _flatten(part, ":"))
        prefix = names + prefix
        out.append(prefix)
    return out


def _flatten(node, op: str) -> list:
    if isinstance(node, Paren):
        return _flatten(node.inner, op)
    if isinstance(node, BinOp) and node.op == op:
        return _flatten(node.left, op) + _flatten(node.right, op)
    return [node]


def _group_name(node, formula: str) -> str:
    if not isinstance(node, Name):
        raise FormulaError(point(formula, formula.rfind("|") + 1,
                                 f"grouping factor {deparse(node)!r} must be a column name "
                                 "(or names joined by ':' or '/')"))
    return node.name
