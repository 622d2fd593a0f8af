"""The term algebra of R's formulas: `a*b`, `a/b`, `(a + b)^2`, `- 1`, `0 +` → an ordered list of terms.

A term is a tuple of atoms (column names or transform calls) in the order they first appear in
the formula; the empty tuple is the intercept. Terms are sorted by degree (stable), as R does.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from .parse import BinOp, Call, FormulaError, Literal, Name, Neg, Num, Paren, deparse


@dataclass(frozen=True)
class Terms:
    """The expanded right-hand side of a formula: intercept flag, terms (without the intercept), offsets."""

    intercept: bool
    terms: tuple[tuple, ...]
    offsets: tuple = ()

    @property
    def labels(self) -> list[str]:
        """R's term labels (`1` for the intercept first when present)."""
        return (["1"] if self.intercept else []) + [term_label(t) for t in self.terms]

    @property
    def atoms(self) -> list:
        return list(dict.fromkeys(a for t in self.terms for a in t))

    @property
    def text(self) -> str:
        """The expanded right-hand side as formula text (parses back to the same terms)."""
        parts = (["1"] if self.intercept else ["0"]) + [term_label(t) for t in self.terms]
        return " + ".join(parts + [deparse(o) for o in self.offsets])


def term_label(term: tuple) -> str:
    return ":".join(deparse(a) for a in term) if term else "1"


@dataclass
class _Expansion:
    terms: list = field(default_factory=list)
    removed: list = field(default_factory=list)
    zero: bool = False
    offsets: list = field(default_factory=list)


def expand(node, what: str = "formula") -> Terms:
    """Terms of a right-hand side node (R's terms.formula without keep.order)."""
    order = {}
    _atom_order(node, order)
    ex = _expand(node, order, what, top=True)
    removed = set(ex.removed)
    intercept = (() in ex.terms or not ex.zero) and () not in removed
    terms = [t for t in dict.fromkeys(ex.terms) if t and t not in removed]
    terms.sort(key=len)
    return Terms(intercept, tuple(terms), tuple(dict.fromkeys(ex.offsets)))


def _atom_order(node, order: dict) -> None:
    if isinstance(node, BinOp):
        _atom_order(node.left, order)
        _atom_order(node.right, order)
    elif isinstance(node, (Paren, Neg)):
        _atom_order(node.inner if isinstance(node, Paren) else node.operand, order)
    elif isinstance(node, (Name, Call)):
        order.setdefault(node, len(order))


def _term(atoms, order: dict) -> tuple:
    return tuple(sorted(set(atoms), key=order.__getitem__))


def _expand(node, order: dict, what: str, top: bool = False) -> _Expansion:
    if isinstance(node, Paren):
        return _expand(node.inner, order, what, top)
    if isinstance(node, Num):
        if node.value in (0, 1):
            return _Expansion(terms=[()] if node.value == 1 else [], zero=node.value == 0)
        raise FormulaError(f"the number {deparse(node)} is not a term of the {what}; numbers other than 0 and 1 "
                           "belong inside I(), e.g. I(2 * x)")
    if isinstance(node, Neg):
        inner = _expand(node.operand, order, what)
        return _Expansion(terms=[()] if inner.zero else [], removed=inner.terms)
    if isinstance(node, Name):
        return _Expansion(terms=[(node,)])
    if isinstance(node, Call):
        if node.func == "offset":
            if not top:
                raise FormulaError(f"{deparse(node)} must be added to the {what} with '+'")
            return _Expansion(offsets=[node])
        if node.func in ("cbind", "weights"):
            raise FormulaError(f"cbind(...) can only be the response (of glmer): {deparse(node)}"
                               if node.func == "cbind" else
                               f"weights go in the weights= argument, not in the formula: {deparse(node)}")
        return _Expansion(terms=[(node,)])
    if isinstance(node, Literal):
        raise FormulaError(f"{deparse(node)} is not a term of the {what}")
    op = node.op
    if op in ("+", "-"):
        left = _expand(node.left, order, what, top)
        right = _expand(node.right, order, what, top and op == "+")
        if op == "-":
            return _Expansion(left.terms + ([()] if right.zero else []), left.removed + right.terms, left.zero,
                              left.offsets)
        return _Expansion(left.terms + right.terms, left.removed + right.removed, left.zero or right.zero,
                          left.offsets + right.offsets)
    if op in ("|", "||"):
        raise FormulaError(f"a random-effects term ({deparse(node)}) must be in parentheses and added with '+'")
    if op == "^":  # all interactions up to the given degree
        left = _expand(node.left, order, what)
        result = list(left.terms)
        n_atoms = len({a for t in left.terms for a in t})
        for _ in range(min(int(node.right.value), n_atoms) - 1):  # higher powers add no terms
            result = list(dict.fromkeys(result + _products(result, left.terms, order)))
        return _Expansion(terms=result)
    left, right = _expand(node.left, order, what), _expand(node.right, order, what)
    if op == ":":
        return _Expansion(terms=_products(left.terms, right.terms, order))
    if op == "*":
        return _Expansion(terms=left.terms + right.terms + _products(left.terms, right.terms, order))
    outer = [_term([a for t in left.terms for a in t], order)]  # op == "/": a/b is a + a:b
    return _Expansion(terms=left.terms + _products(outer, right.terms, order))


def _products(a: list, b: list, order: dict) -> list:
    return [_term(s + t, order) for t in b for s in a]
