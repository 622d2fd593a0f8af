"""Formula text → syntax tree, without evaluating anything.

A small tokenizer and recursive-descent parser for lme4's formula language. Only column names
(backticked names too), numbers, the formula operators (`+ - * / : ^ | ||`), arithmetic inside
function arguments, and the calls named in `TRANSFORMS` (plus `cbind`/`offset`, kept as hooks)
can appear; anything else raises `FormulaError` naming the token. Nothing is ever `eval`ed.
"""
from __future__ import annotations

import functools
import keyword
import re
from dataclasses import dataclass


class FormulaError(ValueError):
    """A formula that cannot be parsed or is not allowed; the message shows where."""


# R's transforms and their numpy spellings; `factor`/`C` make a factor, `I` protects arithmetic
NUMERIC = {"log": "log", "log1p": "log1p", "exp": "exp", "sqrt": "sqrt", "abs": "abs"}
TRANSFORMS = {**NUMERIC, **{f"np.{k}": v for k, v in NUMERIC.items()},
              **{f"numpy.{k}": v for k, v in NUMERIC.items()},
              "I": "I", "scale": "scale", "center": "center", "poly": "poly", "C": "factor", "factor": "factor"}
HOOKS = {"cbind", "offset", "weights"}  # recognised so that lmer can say "not supported yet"
# covariance structures of a random term, written around it: `diag(x | g)`, `cs(0 + f | g)` (compound
# symmetry); keys of model.covariance.STRUCTURES
COVARIANCE_CALLS = {"us", "diag", "cs"}
KEYWORDS = {"poly": {"degree", "raw"}, "factor": {"levels"}, "C": {"levels"}}
ARITY = {"poly": 2, "cbind": 1000}  # most positional arguments; every other function takes one


@dataclass(frozen=True)
class Name:
    """A column reference (`name` is the column's name, without backticks)."""

    name: str


@dataclass(frozen=True)
class Num:
    value: float


@dataclass(frozen=True)
class Literal:
    """A string or a list of literals: only as `levels=` of `factor()`/`C()`."""

    value: object


@dataclass(frozen=True)
class Call:
    """An allowed function applied to arguments (`func` as written, e.g. `np.log`)."""

    func: str
    args: tuple
    kwargs: tuple = ()


@dataclass(frozen=True)
class BinOp:
    op: str
    left: object
    right: object


@dataclass(frozen=True)
class Neg:
    operand: object


@dataclass(frozen=True)
class Paren:
    inner: object


_TOKEN = re.compile(r"""
    (?P<space>\s+)
  | (?P<backtick>`[^`]*`)
  | (?P<number>(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?(?![\w.]))
  | (?P<name>(?:[^\W\d]|\.(?!\d))[\w.]*)
  | (?P<string>'[^']*'|"[^"]*")
  | (?P<op>\|\||\*\*|%in%|[~+\-*/:^|(),=\[\]])
""", re.VERBOSE)


@dataclass(frozen=True)
class Token:
    kind: str
    text: str
    pos: int


def bounded(fn):
    """Turn Python's RecursionError on a pathologically nested formula into a FormulaError."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except RecursionError:
            raise FormulaError("the formula nests too deeply (unary signs, powers or parentheses)") from None

    return wrapper


def point(text: str, pos: int, message: str) -> str:
    """`message` with the formula and a caret under position `pos`."""
    return f"{message}\n  {text}\n  {' ' * max(pos, 0)}^"


def tokenize(text: str) -> list[Token]:
    """Tokens of `text`; a character outside the formula language raises naming it."""
    if not isinstance(text, str):
        raise FormulaError(f"formula must be a string, got {type(text).__name__}")
    tokens, pos = [], 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:
            raise FormulaError(point(text, pos, f"character {text[pos]!r} is not allowed in a formula"))
        if m.lastgroup != "space":
            tokens.append(Token(m.lastgroup, m.group(), pos))
        pos = m.end()
    _check_parentheses(text, tokens)
    return tokens + [Token("end", "", len(text))]


MAX_TOKENS, MAX_DEPTH = 1500, 40  # bounds that keep the recursive parser and evaluator far from Python's limit


def _check_parentheses(text: str, tokens: list[Token]) -> None:
    if len(tokens) > MAX_TOKENS:
        raise FormulaError(f"the formula has {len(tokens)} tokens; at most {MAX_TOKENS} are allowed")
    depth = 0
    for t in tokens:
        depth += (t.text == "(") - (t.text == ")")
        if depth < 0:
            raise FormulaError(point(text, t.pos, "unmatched ')'"))
        if depth > MAX_DEPTH:
            raise FormulaError(point(text, t.pos, f"parentheses nest deeper than {MAX_DEPTH} levels"))
    if depth:
        raise FormulaError(point(text, max(t.pos for t in tokens if t.text == "("), "unclosed '('"))


def _check_name(text: str, tok: Token) -> str:
    """The column name of a name token; dunder parts (`x.__class__`) are refused."""
    name = tok.text[1:-1] if tok.kind == "backtick" else tok.text
    if tok.kind == "name" and any(part.startswith("__") for part in name.split(".")):
        raise FormulaError(point(text, tok.pos, f"name {name!r} is not allowed in a formula "
                                                "(no attribute access or dunder names)"))
    if not name:
        raise FormulaError(point(text, tok.pos, "empty column name ``"))
    return name


class Parser:
    """Recursive descent over the tokens of one formula; `formula()` / `expression()` are the entries."""

    def __init__(self, text: str):
        self.text = text
        self.tokens = tokenize(text)
        self.i = 0

    @property
    def tok(self) -> Token:
        return self.tokens[self.i]

    def error(self, message: str, tok: Token | None = None) -> FormulaError:
        tok = tok or self.tok
        return FormulaError(point(self.text, tok.pos, message))

    def take(self, *texts: str) -> Token | None:
        if self.tok.kind == "op" and self.tok.text in texts:
            self.i += 1
            return self.tokens[self.i - 1]
        return None

    def expect_end(self, what: str) -> None:
        if self.tok.kind != "end":
            raise self.unexpected(what)

    def unexpected(self, what: str) -> FormulaError:
        t = self.tok
        if t.kind == "end":
            return self.error(f"the formula ends where {what} was expected")
        if t.kind == "string":
            return self.error(f"string {t.text} is not allowed here (strings only as levels= of factor()/C())")
        if t.text in ("[", "]"):
            return self.error(f"'{t.text}' is not allowed in a formula (no subscripts)")
        if t.text == "%in%":
            return self.error("operator '%in%' is not supported; write a/b or a:b")
        prev = self.tokens[self.i - 1].text if self.i else ""
        after = f" after {prev!r}" if prev else ""
        if keyword.iskeyword(prev) and prev not in ("True", "False", "None"):
            after += f" ({prev!r} is Python syntax, which a formula does not allow)"
        return self.error(f"unexpected {t.text!r}{after} where {what} was expected")

    # ---- formula operators: | (lowest), + -, * /, :, ^ --------------------------------------
    def bars(self):
        if self.tok.text in ("|", "||"):
            raise self.error("random term has nothing left of '|'")
        left = self.sum()
        tok = self.take("|", "||")
        if tok is None:
            return left
        if self.tok.text == ")" or self.tok.kind == "end":
            raise self.error("random term has no grouping factor right of '|'")
        right = self.sum()
        if self.tok.text in ("|", "||"):
            raise self.error("only one '|' is allowed in a term")
        return BinOp(tok.text, left, right)

    def sum(self):
        node = Neg(self.product()) if self.take("-") else (self.take("+"), self.product())[1]
        while (tok := self.take("+", "-")) is not None:
            node = BinOp(tok.text, node, self.product())
        return node

    def product(self):
        node = self.interaction()
        while (tok := self.take("*", "/")) is not None:
            node = BinOp(tok.text, node, self.interaction())
        return node

    def interaction(self):
        node = self.power()
        while self.take(":"):
            node = BinOp(":", node, self.power())
        return node

    def power(self):
        node = self.term_atom()
        if self.take("^", "**"):
            tok = self.tok
            degree = self.term_atom()
            if not isinstance(degree, Num) or degree.value != int(degree.value) or degree.value < 1:
                raise self.error("the power of a term (a + b)^n needs a whole number n ≥ 1", tok)
            node = BinOp("^", node, degree)
        return node

    def term_atom(self):
        if self.take("("):
            inner = self.bars()
            if not self.take(")"):
                raise self.unexpected("')'")
            return Paren(inner)
        if self.take("-"):
            return Neg(self.term_atom())
        return self.atom()

    # ---- arithmetic (function arguments): + -, * /, unary -, ^ ------------------------------
    def arith(self):
        node = self.arith_product()
        while (tok := self.take("+", "-")) is not None:
            node = BinOp(tok.text, node, self.arith_product())
        return node

    def arith_product(self):
        node = self.arith_unary()
        while (tok := self.take("*", "/")) is not None:
            node = BinOp(tok.text, node, self.arith_unary())
        return node

    def arith_unary(self):
        if self.take("-"):
            return Neg(self.arith_unary())
        if self.take("+"):
            return self.arith_unary()
        node = self.arith_atom()
        if self.take("^", "**"):
            node = BinOp("^", node, self.arith_unary())
        return node

    def arith_atom(self):
        if self.take("("):
            inner = self.arith()
            if not self.take(")"):
                raise self.unexpected("')'")
            return Paren(inner)
        return self.atom()

    # ---- atoms: numbers, names, calls ----------------------------------------------------------
    def atom(self):
        tok = self.tok
        if tok.kind == "number":
            self.i += 1
            return Num(float(tok.text))
        if tok.kind not in ("name", "backtick"):
            raise self.unexpected("a column name, number or '('")
        self.i += 1
        if tok.kind == "name" and self.tok.text == "(":
            return self.call(tok)
        return Name(_check_name(self.text, tok))

    def call(self, tok: Token) -> Call:
        func = tok.text
        if func in COVARIANCE_CALLS:
            return self.covariance_call(func)
        if func not in TRANSFORMS and func not in HOOKS:
            if any(part.startswith("__") for part in func.split(".")):
                raise self.error(f"name {func!r} is not allowed in a formula (no dunder names)", tok)
            raise self.error(f"function {func!r} is not allowed in a formula; allowed: "
                             f"{', '.join(sorted(set(TRANSFORMS) - {'numpy.' + k for k in NUMERIC}))}", tok)
        self.take("(")
        args, kwargs = [], []
        while not self.take(")"):
            if args or kwargs:
                if not self.take(","):
                    raise self.unexpected("',' or ')'")
            if self.tok.kind == "name" and self.tokens[self.i + 1].text == "=":
                key = self.tok
                if key.text not in KEYWORDS.get(func, ()):
                    raise self.error(f"{func}() has no argument {key.text!r} here", key)
                self.i += 2
                kwargs.append((key.text, self.literal() if key.text == "levels" else self.arith()))
            elif kwargs:
                raise self.unexpected("a keyword argument")
            else:
                args.append(self.arith())
        if not args or len(args) > ARITY.get(func, 1):
            most = ARITY.get(func, 1)
            raise self.error(f"{func}() takes {'one argument' if most == 1 else f'1 to {most} arguments'}, "
                             f"got {len(args)}", tok)
        return Call(func, tuple(args), tuple(kwargs))

    def covariance_call(self, func: str) -> Call:
        """`us(x | g)`, `diag(x | g)`, `cs(0 + f | g)`: one random term with the named covariance structure."""
        self.take("(")
        term = self.bars()
        if not (isinstance(term, BinOp) and term.op == "|"):
            raise self.error(f"{func}() takes one random-effects term such as {func}(1 + x | g)")
        if not self.take(")"):
            raise self.unexpected("')'")
        return Call(func, (term,))

    def literal(self) -> Literal:
        """`c('a', 'b')` or `['a', 'b']`: the levels of a factor."""
        if self.tok.text == "c" and self.tokens[self.i + 1].text == "(":
            self.i += 2
            close = ")"
        elif self.take("["):
            close = "]"
        else:
            raise self.unexpected("a list of levels such as c('a', 'b')")
        items = []
        while not self.take(close):
            if items and not self.take(","):
                raise self.unexpected(f"',' or '{close}'")
            tok = self.tok
            if tok.kind == "string":
                items.append(tok.text[1:-1])
            elif tok.kind == "number":
                items.append(float(tok.text))
            else:
                raise self.unexpected("a level (a string or number)")
            self.i += 1
        return Literal(tuple(items))


def deparse(node, top: bool = True) -> str:
    """R's text of a node: `I(Days^2)`, `log(x + 1)`, `a:b`, backticks around non-syntactic names."""
    if isinstance(node, Name):
        return node.name if _syntactic(node.name) or node.name in ("TRUE", "FALSE") else f"`{node.name}`"
    if isinstance(node, Num):
        return str(int(node.value)) if node.value == int(node.value) and abs(node.value) < 1e15 else repr(node.value)
    if isinstance(node, Literal):
        items = node.value
        return "c(" + ", ".join(f'"{v}"' if isinstance(v, str) else deparse(Num(v)) for v in items) + ")"
    if isinstance(node, Call):
        parts = [deparse(a) for a in node.args] + [f"{k} = {deparse(v)}" for k, v in node.kwargs]
        return f"{node.func}({', '.join(parts)})"
    if isinstance(node, Paren):
        return f"({deparse(node.inner)})"
    if isinstance(node, Neg):
        return f"-{deparse(node.operand)}"
    if node.op in ("^", ":", "/"):  # as R's deparse spaces them
        return f"{deparse(node.left)}{node.op}{deparse(node.right)}"
    return f"{deparse(node.left)} {node.op} {deparse(node.right)}"


_R_SYNTACTIC = re.compile(r"^(?:[^\W\d_]|\.(?![\d]))[\w.]*$|^\.$")
_R_RESERVED = {"if", "else", "repeat", "while", "function", "for", "next", "break", "TRUE", "FALSE", "NULL",
               "Inf", "NaN", "NA", "in"}


def _syntactic(name: str) -> bool:
    return bool(_R_SYNTACTIC.match(name)) and name not in _R_RESERVED
