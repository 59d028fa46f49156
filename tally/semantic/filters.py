"""Metric filters: the `where` SQL a metric definition holds (MetricFlow's `where_sql_template`, e.g.
`{{ Dimension('event__event_type') }} = 'purchase'`), parsed into a predicate on rollup columns.

Only what can be evaluated on a rollup row is accepted: the dimensions mapped to its `event_type`
and `source` columns, compared with string literals by `=`, `<>`/`!=`, `[not] in (...)` and
`[not] like`, combined with `and`, `or`, `not` and parentheses. Anything else (another dimension, a
time dimension, a function, a number) raises FilterError with what was found, so a metric is
refused rather than answered with the filter half applied.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import NoReturn

from psycopg import sql


class FilterError(ValueError):
    pass


@dataclass(frozen=True)
class Compare:
    column: str
    op: str  # "=", "<>", "like", "not like"
    value: str


@dataclass(frozen=True)
class In:
    column: str
    values: tuple[str, ...]
    negated: bool = False


@dataclass(frozen=True)
class Not:
    part: Predicate


@dataclass(frozen=True)
class BoolOp:
    op: str  # "and" or "or"
    parts: tuple[Predicate, ...]


Predicate = Compare | In | Not | BoolOp


def all_of(parts: list[Predicate | None]) -> Predicate | None:
    """The conjunction of the given predicates (None: no condition)."""
    kept = [p for p in parts if p is not None]
    if not kept:
        return None
    return kept[0] if len(kept) == 1 else BoolOp("and", tuple(kept))


def text(p: Predicate | None) -> str:
    """A canonical SQL text of the predicate: equal texts, equal predicates."""
    if p is None:
        return "true"
    if isinstance(p, Compare):
        return f"{p.column} {p.op} {_quote(p.value)}"
    if isinstance(p, In):
        return f"{p.column} {'not in' if p.negated else 'in'} ({', '.join(map(_quote, p.values))})"
    if isinstance(p, Not):
        return f"not ({text(p.part)})"
    return f" {p.op} ".join(f"({text(part)})" for part in p.parts)


def to_sql(p: Predicate, params: dict[str, str], prefix: str = "nm") -> sql.Composable:
    """The predicate as SQL on the rollup columns, each text a query parameter added to `params`
    (named `prefix` + a number): never spliced into the SQL, where a `%` would read as a placeholder."""

    def value(v: str) -> sql.Placeholder:
        name = f"{prefix}{len(params)}"
        params[name] = v
        return sql.Placeholder(name)

    def render(p: Predicate) -> sql.Composable:
        if isinstance(p, Compare):
            return sql.SQL("{} {} {}").format(sql.Identifier(p.column), sql.SQL(p.op), value(p.value))
        if isinstance(p, In):
            values = sql.SQL(", ").join(value(v) for v in p.values)
            op = sql.SQL("not in" if p.negated else "in")
            return sql.SQL("{} {} ({})").format(sql.Identifier(p.column), op, values)
        if isinstance(p, Not):
            return sql.SQL("not ({})").format(render(p.part))
        return sql.SQL(f" {p.op} ").join(sql.SQL("({})").format(render(part)) for part in p.parts)

    return render(p)


def _quote(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


_TOKEN = re.compile(
    r"""\s*(?:
      (?P<dim>\{\{\s*Dimension\(\s*(?P<q>['"])(?P<name>[^'"]*)(?P=q)\s*\)\s*\}\})
    | (?P<jinja>\{\{.*?\}\})
    | '(?P<str>(?:[^']|'')*)'
    | (?P<op><>|!=|=|\(|\)|,)
    | (?P<word>[A-Za-z_][A-Za-z_0-9]*)
    | (?P<other>\S+)
    )""",
    re.VERBOSE | re.DOTALL,
)


_TAKES = "Tally takes comparisons of a dimension with quoted text (=, <>, in, like), joined by and, or, not"


def parse(template: str, dimensions: dict[str, str]) -> Predicate:
    """Parse one `where` template. `dimensions`: the names a filter may use (`event__event_type`)
    mapped to the rollup column each one is."""
    tokens = []
    for m in _TOKEN.finditer(template):
        if m.group("dim") is not None:
            name = m.group("name")
            if name not in dimensions:
                known = ", ".join(f"Dimension('{d}')" for d in sorted(dimensions))
                raise FilterError(f"filters on Dimension('{name}'), which the rollups do not hold (only {known})")
            tokens.append(("col", dimensions[name]))
        elif m.group("jinja") is not None:
            raise FilterError(f"uses {m.group('jinja')}: only dimensions of the rollups can be filtered on")
        elif m.group("str") is not None:
            tokens.append(("str", m.group("str").replace("''", "'")))
        elif m.group("op") is not None:
            tokens.append((m.group("op"), None))
        elif m.group("word") is not None:
            tokens.append((m.group("word").lower(), None))
        elif m.group("other") is not None:
            raise FilterError(f"cannot read filter {template.strip()!r} at {m.group('other')!r}: {_TAKES}")
    parser = _Parser(tokens, template.strip())
    pred = parser.disjunction()
    if parser.i != len(tokens):
        parser.fail()
    return pred


class _Parser:
    """Recursive descent over the tokens, SQL precedence: or < and < not < comparison."""

    def __init__(self, tokens: list[tuple[str, str | None]], source: str):
        self.tokens, self.i, self.source = tokens, 0, source

    def peek(self, offset: int = 0) -> str | None:
        j = self.i + offset
        return self.tokens[j][0] if j < len(self.tokens) else None

    def take(self, kind: str) -> str | None:
        if self.peek() != kind:
            self.fail()
        self.i += 1
        return self.tokens[self.i - 1][1]

    def fail(self) -> NoReturn:
        found = self.peek()
        where = f"at {found!r}" if found else "at its end"
        raise FilterError(f"cannot read filter {self.source!r} {where}: {_TAKES}")

    def disjunction(self) -> Predicate:
        parts = [self.conjunction()]
        while self.peek() == "or":
            self.i += 1
            parts.append(self.conjunction())
        return parts[0] if len(parts) == 1 else BoolOp("or", tuple(parts))

    def conjunction(self) -> Predicate:
        parts = [self.negation()]
        while self.peek() == "and":
            self.i += 1
            parts.append(self.negation())
        return parts[0] if len(parts) == 1 else BoolOp("and", tuple(parts))

    def negation(self) -> Predicate:
        if self.peek() == "not":
            self.i += 1
            return Not(self.negation())
        if self.peek() == "(":
            self.i += 1
            inner = self.disjunction()
            self.take(")")
            return inner
        return self.comparison()

    def comparison(self) -> Predicate:
        if self.peek() == "str" and self.peek(1) in ("=", "<>", "!="):  # 'purchase' = {{ Dimension(...) }}
            value = self.take("str")
            op = self.peek()
            self.i += 1
            return Compare(self.take("col"), "=" if op == "=" else "<>", value)
        column = self.take("col")
        kind = self.peek()
        if kind in ("=", "<>", "!="):
            self.i += 1
            return Compare(column, "=" if kind == "=" else "<>", self.take("str"))
        negated = kind == "not"
        if negated:
            self.i += 1
            kind = self.peek()
        if kind == "like":
            self.i += 1
            return Compare(column, "not like" if negated else "like", self.take("str"))
        if kind == "in":
            self.i += 1
            self.take("(")
            values = [self.take("str")]
            while self.peek() == ",":
                self.i += 1
                values.append(self.take("str"))
            self.take(")")
            return In(column, tuple(values), negated)
        self.fail()
