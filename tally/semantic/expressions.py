"""Derived metrics' `expr` (e.g. `revenue / nullif(purchases, 0)`): SQL arithmetic over the input
metrics' names, turned into Python source over the inputs' own sources, so that a query's named
metrics become one compiled function of a bucket's aggregates (tally.semantic.plan) rather than a tree
of calls per point.

Accepted: numbers, the input names, `+ - * /`, parentheses, and nullif, coalesce, abs, greatest,
least. The semantics are PostgreSQL's where MetricFlow's SQL would run there: null in, null out;
greatest and least skip nulls. One difference: a division by zero is null for that point, where the
SQL would fail the whole query. Anything else raises ExpressionError, so the metric is refused.

The Python emitted holds only what this module writes: helper names (HELPERS), number literals it
parsed, and the sources its caller gives for the inputs; never text from the definition itself.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import NoReturn

Value = int | float | None
# Given the Python source of each input (by name), the source of the expression.
Render = Callable[[dict[str, str]], str]


class ExpressionError(ValueError):
    pass


def _add(a: Value, b: Value) -> Value:
    return None if a is None or b is None else a + b


def _sub(a: Value, b: Value) -> Value:
    return None if a is None or b is None else a - b


def _mul(a: Value, b: Value) -> Value:
    return None if a is None or b is None else a * b


def _div(a: Value, b: Value) -> Value:
    return None if a is None or b is None or b == 0 else a / b


def _ratio(a: Value, b: Value) -> Value:
    """A ratio metric, as MetricFlow: cast(numerator as double) / cast(nullif(denominator, 0) as double)."""
    return None if a is None or b is None or b == 0 else float(a) / float(b)


def _fill(a: Value, b: Value) -> Value:
    return b if a is None else a


def _nullif(a: Value, b: Value) -> Value:
    return None if a is not None and b is not None and a == b else a


def _coalesce(*args: Value) -> Value:
    return next((v for v in args if v is not None), None)


def _abs(a: Value) -> Value:
    return None if a is None else abs(a)


def _greatest(*args: Value) -> Value:
    return max((v for v in args if v is not None), default=None)


def _least(*args: Value) -> Value:
    return min((v for v in args if v is not None), default=None)


HELPERS = {f.__name__: f for f in (_add, _sub, _mul, _div, _ratio, _fill, _nullif, _coalesce, _abs, _greatest, _least)}
_OPERATORS = {"+": "_add", "-": "_sub", "*": "_mul", "/": "_div"}
# name -> (smallest, largest number of arguments)
_FUNCTIONS = {"nullif": (2, 2), "coalesce": (1, 99), "abs": (1, 1), "greatest": (1, 99), "least": (1, 99)}

_TOKEN = re.compile(
    r"\s*(?:(?P<num>\d+(?:\.\d*)?(?:[eE][+-]?\d+)?|\.\d+(?:[eE][+-]?\d+)?)"
    r"|(?P<name>[A-Za-z_][A-Za-z_0-9]*)|(?P<op>[-+*/(),])|(?P<other>\S+))"
)


def literal(value: object) -> str:
    """A number as Python source; anything else (text, inf, nan, bool) raises ExpressionError."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ExpressionError(f"{value!r} is not a finite number")
    return repr(value)


def compile_expr(expr: str, names: set[str]) -> tuple[Render, set[str]]:
    """The expression as a renderer of Python source, and the names it reads. `names`: the inputs it
    may use (lower case, as SQL folds unquoted names)."""
    tokens: list[tuple[str, str]] = []
    for m in _TOKEN.finditer(expr):
        kind = m.lastgroup
        if kind == "other":
            raise ExpressionError(f"cannot read {m.group(kind)!r} in {expr.strip()!r}")
        if kind is not None:
            value = m.group(kind)
            tokens.append((kind, value.lower() if kind == "name" else value))
    parser = _Parser(tokens, expr.strip(), names)
    render = parser.sum()
    if parser.i != len(tokens):
        parser.fail()
    return render, parser.used


def function(sources: list[str], arguments: int) -> Callable[..., tuple]:
    """One function of `arguments` values (v0, v1, ...) returning the tuple of `sources`' values."""
    args = ", ".join(f"v{i}" for i in range(arguments))
    code = compile(f"lambda {args}: ({''.join(s + ', ' for s in sources)})", "<named metrics>", "eval")
    return eval(code, dict(HELPERS))  # the source holds HELPERS names, literal()s and v<i> only


class _Parser:
    def __init__(self, tokens: list[tuple[str, str]], source: str, names: set[str]):
        self.tokens, self.i, self.source, self.names = tokens, 0, source, names
        self.used: set[str] = set()

    def peek(self) -> str | None:
        return self.tokens[self.i][1] if self.i < len(self.tokens) else None

    def fail(self) -> NoReturn:
        found = self.peek()
        where = f"at {found!r}" if found else "at its end"
        raise ExpressionError(
            f"cannot read {self.source!r} {where}: Tally takes numbers, input metrics, + - * /, parentheses"
            f" and {', '.join(_FUNCTIONS)}"
        )

    def binary(self, op: str, left: Render, right: Render) -> Render:
        helper = _OPERATORS[op]
        return lambda inputs: f"{helper}({left(inputs)}, {right(inputs)})"

    def sum(self) -> Render:
        render = self.product()
        while self.peek() in ("+", "-"):
            op = self.tokens[self.i][1]
            self.i += 1
            render = self.binary(op, render, self.product())
        return render

    def product(self) -> Render:
        render = self.unary()
        while self.peek() in ("*", "/"):
            op = self.tokens[self.i][1]
            self.i += 1
            render = self.binary(op, render, self.unary())
        return render

    def unary(self) -> Render:
        if self.peek() in ("-", "+"):
            negate = self.peek() == "-"
            self.i += 1
            inner = self.unary()
            return self.binary("-", lambda inputs: "0", inner) if negate else inner
        return self.atom()

    def atom(self) -> Render:
        if self.i >= len(self.tokens):
            self.fail()
        kind, value = self.tokens[self.i]
        if kind == "num":
            self.i += 1
            number = literal(float(value) if any(c in value for c in ".eE") else int(value))
            return lambda inputs: number
        if value == "(":
            self.i += 1
            inner = self.sum()
            self.expect(")")
            return inner
        if kind != "name":
            self.fail()
        self.i += 1
        if self.peek() == "(":
            return self.call(value)
        if value not in self.names:
            inputs = ", ".join(sorted(self.names))
            raise ExpressionError(f"{self.source!r} uses {value!r}, which is not one of its input metrics ({inputs})")
        self.used.add(value)
        return lambda inputs: inputs[value]

    def call(self, name: str) -> Render:
        if name not in _FUNCTIONS:
            raise ExpressionError(f"{self.source!r} calls {name}(), which Tally does not compute")
        low, high = _FUNCTIONS[name]
        self.expect("(")
        args = [self.sum()]
        while self.peek() == ",":
            self.i += 1
            args.append(self.sum())
        self.expect(")")
        if not low <= len(args) <= high:
            takes = low if low == high else f"{low} or more"
            raise ExpressionError(f"{self.source!r}: {name}() takes {takes} arguments")
        return lambda inputs: f"_{name}({', '.join(a(inputs) for a in args)})"

    def expect(self, op: str) -> None:
        if self.peek() != op:
            self.fail()
        self.i += 1
