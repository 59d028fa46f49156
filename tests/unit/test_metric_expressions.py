"""Derived metrics' expressions (tally.semantic.expressions): SQL arithmetic over input metrics, with
PostgreSQL's null rules, compiled into Python; anything else refused."""

from __future__ import annotations

import pytest

from tally.semantic.expressions import ExpressionError, compile_expr, function

NAMES = {"revenue", "purchases", "views"}


def value(expr: str, **env):
    """The expression compiled as plan.py compiles it, then computed."""
    render, _ = compile_expr(expr, NAMES)
    order = sorted(NAMES)
    fn = function([render({name: f"v{i}" for i, name in enumerate(order)})], len(order))
    (out,) = fn(*(env.get(name) for name in order))
    return out


@pytest.mark.parametrize(
    ("expr", "env", "expected"),
    [
        ("revenue / nullif(purchases, 0)", {"revenue": 90.0, "purchases": 4}, 22.5),
        ("revenue / nullif(purchases, 0)", {"revenue": 90.0, "purchases": 0}, None),
        ("revenue / purchases", {"revenue": 90.0, "purchases": 0}, None),  # SQL would fail; null here
        ("purchases / views", {"purchases": 1, "views": 4}, 0.25),  # numeric in PostgreSQL, not integer
        ("1 + 2 * 3 - 4 / 2", {}, 5.0),
        ("(1 + 2) * 3", {}, 9),
        ("-purchases + 10", {"purchases": 3}, 7),
        ("- -purchases", {"purchases": 3}, 3),
        ("purchases * 1.5e1", {"purchases": 2}, 30.0),
        (".5 * purchases", {"purchases": 2}, 1.0),
        ("revenue + purchases", {"purchases": 2}, None),  # null in, null out
        ("coalesce(revenue, 0) + purchases", {"purchases": 2}, 2),
        ("coalesce(revenue, views, 7)", {}, 7),
        ("nullif(purchases, views)", {"purchases": 2, "views": 2}, None),
        ("nullif(purchases, views)", {"purchases": 2}, 2),
        ("abs(revenue)", {"revenue": -3.5}, 3.5),
        ("greatest(revenue, purchases, views)", {"purchases": 2, "views": 5}, 5),  # nulls skipped
        ("least(revenue, purchases)", {"purchases": 2}, 2),
        ("least(revenue, views)", {}, None),
        ("REVENUE / Purchases", {"revenue": 1.0, "purchases": 2}, 0.5),  # SQL names fold to lower case
    ],
)
def test_expressions_compute_as_postgresql_would(expr, env, expected):
    assert value(expr, **env) == expected


def test_the_names_an_expression_reads_are_reported():
    _, used = compile_expr("revenue / nullif(purchases, 0)", NAMES)
    assert used == {"revenue", "purchases"}


def test_the_python_holds_only_helpers_numbers_and_the_sources_given():
    render, _ = compile_expr("-(revenue + 2.5) / nullif(coalesce(purchases, views), 0)", NAMES)
    source = render({"revenue": "v0", "purchases": "v1", "views": "v2"})
    assert source == "_div(_sub(0, _add(v0, 2.5)), _nullif(_coalesce(v1, v2), 0))"


@pytest.mark.parametrize(
    ("expr", "says"),
    [
        ("revenue / orders", "uses 'orders', which is not one of its input metrics (purchases, revenue, views)"),
        ("sqrt(revenue)", "calls sqrt(), which Tally does not compute"),
        ("nullif(revenue)", "nullif() takes 2 arguments"),
        ("abs(revenue, views)", "abs() takes 1 arguments"),
        ("case when views > 0 then 1 end", "cannot read"),
        ("revenue % 2", "cannot read"),
        ("revenue +", "at its end"),
        ("(revenue", "at its end"),
        ("revenue views", "at 'views'"),
        ("'a'", "cannot read"),
        ("", "at its end"),
        ("revenue * 1e999", "inf is not a finite number"),
        ("__import__(revenue)", "calls __import__(), which Tally does not compute"),
        ("__import__('os')", "cannot read"),
        ("revenue.real", "cannot read"),
    ],
)
def test_anything_else_is_refused_with_what_was_found(expr, says):
    with pytest.raises(ExpressionError) as e:
        compile_expr(expr, NAMES)
    assert says in str(e.value)
