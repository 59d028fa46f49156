"""Reading a semantic manifest into the named metrics Tally serves (tally.semantic.catalog, .plan):
the project's metrics computed from filtered aggregates, and every metric that needs what the
rollups do not hold refused at load with the reason, never answered with part of it ignored."""

from __future__ import annotations

import pytest

from tally.semantic.catalog import ManifestError, load
from tally.semantic.plan import plan
from tests.unit.named_manifest import (
    MODEL,
    SOURCE,
    TYPE,
    derived,
    encoded,
    manifest,
    ratio,
    ref,
    simple,
    where,
)


def catalog(*extra, **kw):
    return load(encoded(manifest(*extra, **kw)))


def values(cat, names: list[str], aggregates: dict[tuple[str, str], object]) -> dict:
    """The metrics' values given each aggregate, named by (column, filter text)."""
    p = plan(cat, names)
    return p.values(tuple(aggregates[k] for k in _keys(p)))


def _keys(p):
    """(column, filter text) of each aggregate a plan adds to the query, in order."""
    return [(column, text) for column, _agg, text in p.keys]


def test_the_projects_metrics_are_served_in_order_with_what_they_are_built_from():
    cat = catalog()
    assert cat.names == ("events", "page_views", "purchases", "revenue", "conversion", "average_order_value")
    assert cat.refused == {}
    purchases = cat.metrics["purchases"]
    assert purchases.measure == {"name": "events", "agg": "sum", "column": "event_count"}
    assert purchases.filter == "{{ Dimension('event__event_type') }} = 'purchase'"
    assert cat.metrics["conversion"].numerator.metric == "purchases"
    assert [i.metric for i in cat.metrics["average_order_value"].inputs] == ["revenue", "purchases"]


def test_metrics_sharing_a_filtered_aggregate_read_it_once():
    p = plan(catalog(), ["purchases", "conversion", "revenue", "average_order_value", "events"])
    assert _keys(p) == [
        ("event_count", "event_type = 'purchase'"),
        ("event_count", "event_type = 'page_view'"),
        ("value_sum", "event_type = 'purchase'"),
        ("event_count", "true"),
    ]
    assert [where is None for _, _, where in p.aggregates] == [False, False, False, True]


def test_values_follow_metricflows_arithmetic():
    agg = {
        ("event_count", "event_type = 'purchase'"): 4,
        ("event_count", "event_type = 'page_view'"): 10,
        ("value_sum", "event_type = 'purchase'"): 90.0,
        ("event_count", "true"): 20,
    }
    names = ["purchases", "page_views", "conversion", "revenue", "average_order_value", "events"]
    assert values(catalog(), names, agg) == {
        "purchases": 4,
        "page_views": 10,
        "conversion": 0.4,
        "revenue": 90.0,
        "average_order_value": 22.5,
        "events": 20,
    }
    # A bucket with page views but no purchase rows: purchases has no value there (MetricFlow has
    # no row), and neither have the metrics built on it.
    none = {**agg, ("event_count", "event_type = 'purchase'"): None, ("value_sum", "event_type = 'purchase'"): None}
    assert values(catalog(), ["purchases", "conversion", "average_order_value"], none) == {
        "purchases": None,
        "conversion": None,
        "average_order_value": None,
    }
    no_views = {**agg, ("event_count", "event_type = 'page_view'"): 0}
    assert values(catalog(), ["conversion"], no_views) == {"conversion": None}


def test_fill_nulls_with_gives_its_value_where_no_row_passes_the_filter():
    m = simple("signups", ref("events", fill_nulls_with=0), f"{TYPE} = 'signup'")
    cat = catalog(m)
    assert values(cat, ["signups"], {("event_count", "event_type = 'signup'"): None}) == {"signups": 0}
    assert values(cat, ["signups"], {("event_count", "event_type = 'signup'"): 3}) == {"signups": 3}


def test_filters_on_inputs_and_on_derived_metrics_reach_every_aggregate():
    web_share = ratio("web_share", ref("events", filter=where(f"{SOURCE} = 'web'")), "events")
    web_aov = derived("web_aov", "revenue / nullif(purchases, 0)", "revenue", "purchases", filter=f"{SOURCE} = 'web'")
    aliased = derived("doubled", "2 * n", ref("purchases", alias="n"))
    cat = catalog(web_share, web_aov, aliased)
    assert _keys(plan(cat, ["web_share"])) == [("event_count", "source = 'web'"), ("event_count", "true")]
    assert _keys(plan(cat, ["web_aov"])) == [
        ("value_sum", "(source = 'web') and (event_type = 'purchase')"),
        ("event_count", "(source = 'web') and (event_type = 'purchase')"),
    ]
    assert values(cat, ["doubled"], {("event_count", "event_type = 'purchase'"): 4}) == {"doubled": 8}


def test_a_plan_is_keyed_by_the_definitions_it_computes():
    a, b = catalog(), catalog(simple("signups", "events", f"{TYPE} = 'signup'"))
    assert plan(a, ["purchases"]).key != plan(b, ["purchases"]).key  # the manifest changed
    assert plan(a, ["purchases"]).key == plan(catalog(), ["purchases"]).key
    assert plan(a, ["purchases"]).key != plan(a, ["revenue"]).key


OTHER_MODEL = {
    **MODEL,
    "name": "daily",
    "node_relation": {"alias": "rollup_1d"},
    "measures": [{"name": "daily_events", "agg": "sum", "expr": "event_count"}],
}


@pytest.mark.parametrize(
    ("metric", "says"),
    [
        (simple("x", "events", "{{ Dimension('event__country') }} = 'de'"), "event__country"),
        (simple("x", "events", "{{ TimeDimension('metric_time', 'day') }} > '2026-01-01'"), "TimeDimension"),
        (simple("x", "no_such"), "measure no_such is not defined"),
        (simple("x", "daily_events"), "measure daily_events is on rollup_1d"),
        (simple("x", ref("events", join_to_timespine=True)), "join_to_timespine"),
        (simple("count", "events"), "'count' is taken by a built-in metric"),
        (simple("final", "events"), "taken by a built-in"),
        ({**simple("x", "events"), "type": "cumulative"}, "cumulative metrics are not computed"),
        ({**simple("x", "events"), "type": "conversion"}, "conversion metrics are not computed"),
        (ratio("x", ref("purchases", offset_window="1 day"), "events"), "offset"),
        (derived("x", "purchases - lag", "purchases", ref("purchases", alias="lag", offset_to_grain="day")), "offset"),
        (derived("x", "purchases / orders", "purchases"), "'orders', which is not one of its input metrics"),
        (derived("x", "purchases", "nothing_here"), "input nothing_here: it is built from nothing_here"),
        (ratio("x", ref("purchases", filter=where("{{ Dimension('event__plan') }} = 'pro'")), "events"), "event__plan"),
    ],
)
def test_a_metric_needing_what_the_rollups_lack_is_refused_with_the_reason(metric, says):
    cat = catalog(metric, models=[MODEL, OTHER_MODEL])
    assert metric["name"] not in cat.metrics
    assert says in cat.refused[metric["name"]], cat.refused
    assert "purchases" in cat.metrics  # the others are served


@pytest.mark.parametrize(
    ("change", "says"),
    [
        ({"expr": "event_count * 2"}, "a measure must be one of the rollup columns"),
        ({"expr": "users_hll"}, "must be one of the rollup columns"),
        ({"agg": "max"}, "over the rollups only sum of it is exact"),
        ({"agg": "count_distinct"}, "only sum of it is exact"),
        ({"agg_params": {"percentile": 0.5}}, "agg_params"),
        ({"non_additive_dimension": {"name": "minute_start"}}, "non_additive_dimension"),
        ({"agg_time_dimension": "other_time"}, "not aggregated over `minute_start`"),
    ],
)
def test_a_measure_that_is_not_a_rollup_column_combined_exactly_is_refused(change, says):
    model = {**MODEL, "measures": [{**MODEL["measures"][0], **change}, *MODEL["measures"][1:]]}
    cat = catalog(models=[model])
    assert says in cat.refused["events"]
    # ...and so is every metric built on it, saying why.
    assert cat.refused["conversion"].startswith("input purchases: ")
    assert "revenue" in cat.metrics


def test_a_dimension_is_whatever_column_its_expr_names():
    dims = [
        MODEL["dimensions"][0],
        {"name": "kind", "type": "categorical", "expr": "event_type"},
        {"name": "source_lower", "type": "categorical", "expr": "lower(source)"},
    ]
    cat = catalog(
        simple("by_kind", "events", "{{ Dimension('event__kind') }} = 'purchase'"),
        simple("by_lower", "events", "{{ Dimension('event__source_lower') }} = 'web'"),
        models=[{**MODEL, "dimensions": dims}],
    )
    assert _keys(plan(cat, ["by_kind"])) == [("event_count", "event_type = 'purchase'")]
    assert "event__source_lower" in cat.refused["by_lower"]


def test_a_metric_built_from_itself_is_refused():
    cat = catalog(derived("a", "b + 1", "b"), derived("b", "a + 1", "a"))
    assert "built from itself (a -> b -> a)" in cat.refused["a"]
    assert "built from itself" in cat.refused["b"]


@pytest.mark.parametrize("raw", [b"", b"{not json", b"[]", b'{"semantic_models": []}', b'{"metrics": [{"x": 1}]}'])
def test_a_file_that_is_not_a_semantic_manifest_is_an_error_not_an_empty_catalog(raw):
    with pytest.raises(ManifestError):
        load(raw)
