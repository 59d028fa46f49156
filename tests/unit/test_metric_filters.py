"""Metric filters (tally.semantic.filters): MetricFlow's where templates read into predicates on the
rollup columns, and everything the rollups cannot answer refused with what was found."""

from __future__ import annotations

import pytest

from tally.semantic.filters import BoolOp, Compare, FilterError, In, Not, all_of, parse, text, to_sql

DIMS = {"event__event_type": "event_type", "event__source": "source"}
TYPE, SOURCE = "{{ Dimension('event__event_type') }}", '{{Dimension("event__source")}}'


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        (f"{TYPE} = 'purchase'\n", Compare("event_type", "=", "purchase")),
        (f"{TYPE} != 'purchase'", Compare("event_type", "<>", "purchase")),
        (f"'web' <> {SOURCE}", Compare("source", "<>", "web")),
        (f"{SOURCE} = 'o''brien'", Compare("source", "=", "o'brien")),
        (f"{TYPE} IN ('a', 'b')", In("event_type", ("a", "b"))),
        (f"{TYPE} not in ('a')", In("event_type", ("a",), negated=True)),
        (f"{TYPE} like 'checkout_%'", Compare("event_type", "like", "checkout_%")),
        (f"{TYPE} NOT LIKE 'x%'", Compare("event_type", "not like", "x%")),
        (f"not ({SOURCE} = 'web')", Not(Compare("source", "=", "web"))),
    ],
)
def test_comparisons_of_rollup_dimensions_with_text_are_read(template, expected):
    assert parse(template, DIMS) == expected


def test_and_binds_tighter_than_or_as_in_sql():
    p = parse(f"{TYPE} = 'a' or {TYPE} = 'b' and {SOURCE} = 'web'", DIMS)
    assert p == BoolOp(
        "or",
        (
            Compare("event_type", "=", "a"),
            BoolOp("and", (Compare("event_type", "=", "b"), Compare("source", "=", "web"))),
        ),
    )
    grouped = parse(f"({TYPE} = 'a' or {TYPE} = 'b') and {SOURCE} = 'web'", DIMS)
    assert grouped.op == "and" and grouped.parts[0].op == "or"


def test_sql_names_the_columns_and_passes_every_text_as_a_parameter():
    p = parse(f"{TYPE} in ('a', 'it''s') and not {SOURCE} like '%x'", DIMS)
    params: dict = {"nm0": "taken before"}
    assert to_sql(p, params).as_string(None) == (
        """("event_type" in (%(nm1)s, %(nm2)s)) and (not ("source" like %(nm3)s))"""
    )
    assert params == {"nm0": "taken before", "nm1": "a", "nm2": "it's", "nm3": "%x"}
    assert text(p) == "(event_type in ('a', 'it''s')) and (not (source like '%x'))"


def test_a_quote_in_a_value_stays_inside_the_value():
    p = parse(f"{SOURCE} = 'x'' or ''1''=''1'", DIMS)
    assert p == Compare("source", "=", "x' or '1'='1")
    params: dict = {}
    assert to_sql(p, params).as_string(None) == """"source" = %(nm0)s"""
    assert params == {"nm0": "x' or '1'='1"}


def test_all_of_joins_filters_and_drops_missing_ones():
    a, b = Compare("source", "=", "web"), Compare("event_type", "=", "x")
    assert all_of([None, a, None]) == a
    assert all_of([a, b]) == BoolOp("and", (a, b))
    assert all_of([None]) is None and text(None) == "true"


@pytest.mark.parametrize(
    ("template", "says"),
    [
        ("{{ Dimension('event__country') }} = 'de'", "Dimension('event__country'), which the rollups do not hold"),
        ("{{ TimeDimension('metric_time', 'day') }} >= '2026-01-01'", "TimeDimension"),
        ("{{ Entity('event') }} = 'x'", "only dimensions of the rollups"),
        ("{{ Dimension('event__source').grain('day') }} = 'x'", "only dimensions"),
        (f"{TYPE} = 3", "cannot read filter"),
        (f"lower({TYPE}) = 'x'", "cannot read filter"),
        (f"{TYPE} = 'a' {SOURCE}", "cannot read filter"),
        (f"{TYPE} >= 'a'", "cannot read"),
        (f"{TYPE} is null", "cannot read filter"),
        (f"{TYPE} in ()", "cannot read filter"),
        (f"{TYPE} = 'a' and", "at its end"),
        ("", "at its end"),
        ("event_type = 'a'", "cannot read filter"),
    ],
)
def test_what_the_rollups_cannot_answer_is_refused_with_what_was_found(template, says):
    with pytest.raises(FilterError) as e:
        parse(template, DIMS)
    assert says in str(e.value)
