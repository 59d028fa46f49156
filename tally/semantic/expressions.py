"""Derived metrics' `expr` (e.g. `revenue / nullif(purchases, 0)`): SQL arithmetic over the input
metrics' names, compiled once into a Python function of their values.

Accepted: numbers, the input names, `+ - * /`, parentheses, and nullif, coalesce, abs, greatest,
least. The semantics are PostgreSQL's where MetricFlow's SQL would run there: null in, null out;
greatest and least skip nulls. One difference: a division by zero is null for that point, where the
SQL would fail the whole query. Anything else raises ExpressionError, so the metric is refused.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, NoReturn

Value = int | float | None
Env = dict[str, Any]
Fn = Callable[[Env], Value]


class ExpressionError(ValueError):
    pass


_TOKEN = re.compile(
    r"\s*(?:(?P<num>\d+(?:\.\d*)?(?:[eE][+-]?\d+)?|\.\d+(?:[eE][+-]?\d+)?)"
    r"|(?P<name>[A-Za-z_][A-Za-z_0-9]*)|(?P<op>[-+*/(),])|(?P<other>\S+))"
)


def compile_expr(expr: str, names: set[str]) -> tuple[Fn, set[str]]:
    """The function computing `expr` from a dict of the input values, and the names it reads.
    `names`: the inputs it may use."""
    tokens: list[tuple[str, str]] = []
    for m in _TOKEN.finditer(expr):
        kind = m.lastgroup
        if kind == "other":
            raise ExpressionError(f"cannot read {m.group(kind)!r} in {expr.strip()!r}")
        if kind is not None:
            value = m.group(kind)
            tokens.append((kind, value.lower() if kind == "name" else value))
    parser = _Parser(tokens, expr.strip(), names)
    fn = parser.sum()
    if parser.i != len(tokens):
        parser.fail()
    return fn, parser.used


def _arith(op: str, left: Fn, right: Fn) -> Fn:
    if op == "+":

        def f(env: Env) -> Value:
            a, b = left(env), right(env)
            return None if a is None or b is None else a + b
    elif op == "-":

        def f(env: Env) -> Value:
            a, b = left(env), right(env)
            return None if a is None or b is None else a - b
    elif op == "*":

        def f(env: Env) -> Value:
            a, b = left(env), right(env)
            return None if a is None or b is None else a * b
    else:

        def f(env: Env) -> Value:
            a, b = left(env), right(env)
            return None if a is None or b is None or b == 0 else a / b

    return f


def _nullif(args: list[Fn]) -> Fn:
    a, b = args

    def f(env: Env) -> Value:
        x, y = a(env), b(env)
        return None if x is not None and y is not None and x == y else x

    return f


def _coalesce(args: list[Fn]) -> Fn:
    def f(env: Env) -> Value:
        for arg in args:
            v = arg(env)
            if v is not None:
                return v
        return None

    return f


def _abs(args: list[Fn]) -> Fn:
    (a,) = args

    def f(env: Env) -> Value:
        v = a(env)
        return None if v is None else abs(v)

    return f


def _extreme(pick: Callable) -> Callable[[list[Fn]], Fn]:
    def build(args: list[Fn]) -> Fn:
        def f(env: Env) -> Value:
            values = [v for v in (arg(env) for arg in args) if v is not None]
            return pick(values) if values else None

        return f

    return build


# name -> (smallest, largest number of arguments, builder)
_FUNCTIONS: dict[str, tuple[int, int, Callable[[list[Fn]], Fn]]] = {
    "nullif": (2, 2, _nullif),
    "coalesce": (1, 99, _coalesce),
    "abs": (1, 1, _abs),
    "greatest": (1, 99, _extreme(max)),
    "least": (1, 99, _extreme(min)),
}


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

    def sum(self) -> Fn:
        fn = self.product()
        while self.peek() in ("+", "-"):
            op = self.tokens[self.i][1]
            self.i += 1
            fn = _arith(op, fn, self.product())
        return fn

    def product(self) -> Fn:
        fn = self.unary()
        while self.peek() in ("*", "/"):
            op = self.tokens[self.i][1]
            self.i += 1
            fn = _arith(op, fn, self.unary())
        return fn

    def unary(self) -> Fn:
        if self.peek() in ("-", "+"):
            negate = self.peek() == "-"
            self.i += 1
            inner = self.unary()
            return _arith("-", lambda env: 0, inner) if negate else inner
        return self.atom()

    def atom(self) -> Fn:
        if self.i >= len(self.tokens):
            self.fail()
        kind, value = self.tokens[self.i]
        if kind == "num":
            self.i += 1
            number = float(value) if any(c in value for c in ".eE") else int(value)
            return lambda env: number
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
        return lambda env: env[value]

    def call(self, name: str) -> Fn:
        if name not in _FUNCTIONS:
            raise ExpressionError(f"{self.source!r} calls {name}(), which Tally does not compute")
        low, high, build = _FUNCTIONS[name]
        self.expect("(")
        args = [self.sum()]
        while self.peek() == ",":
            self.i += 1
            args.append(self.sum())
        self.expect(")")
        if not low <= len(args) <= high:
            takes = low if low == high else f"{low} or more"
            raise ExpressionError(f"{self.source!r}: {name}() takes {takes} arguments")
        return build(args)

    def expect(self, op: str) -> None:
        if self.peek() != op:
            self.fail()
        self.i += 1
