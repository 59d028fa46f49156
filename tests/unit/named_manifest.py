"""Semantic manifests as `dbt parse` writes them (target/semantic_manifest.json), built in Python for
the unit tests of tally.semantic: the semantic model over rollup_minutely and the project's metrics."""

from __future__ import annotations

import copy
import json


def _measure(name: str, agg: str, expr: str | None = None) -> dict:
    return {
        "name": name,
        "agg": agg,
        "expr": expr,
        "agg_params": None,
        "non_additive_dimension": None,
        "agg_time_dimension": None,
        "label": None,
        "description": None,
        "create_metric": False,
    }


MODEL = {
    "name": "rollup_minutely",
    "defaults": {"agg_time_dimension": "minute_start"},
    "node_relation": {
        "alias": "rollup_minutely",
        "schema_name": "analytics",
        "database": "tally",
        "relation_name": '"tally"."analytics"."rollup_minutely"',
    },
    "primary_entity": "event",
    "entities": [],
    "measures": [
        _measure("events", "sum", "event_count"),
        _measure("value_sum", "sum"),
        _measure("value_count", "sum"),
        _measure("value_min", "min"),
        _measure("value_max", "max"),
    ],
    "dimensions": [
        {
            "name": "minute_start",
            "type": "time",
            "expr": "(minute_start at time zone 'UTC')",
            "type_params": {"time_granularity": "minute", "validity_params": None},
        },
        {"name": "event_type", "type": "categorical", "expr": None, "type_params": None},
        {"name": "source", "type": "categorical", "expr": None, "type_params": None},
    ],
}


def where(*templates: str) -> dict:
    return {"where_filters": [{"where_sql_template": t} for t in templates]}


def ref(name: str, **more) -> dict:
    return {"name": name, "filter": None, "alias": None, **more}


def simple(name: str, measure: str | dict, filter: str | None = None, **more) -> dict:
    m = ref(measure) if isinstance(measure, str) else measure
    return {
        "name": name,
        "label": name.replace("_", " ").capitalize(),
        "description": f"About {name}.",
        "type": "simple",
        "type_params": {"measure": m, "metrics": []},
        "filter": where(filter) if filter else None,
        **more,
    }


def ratio(name: str, numerator: str | dict, denominator: str | dict, filter: str | None = None) -> dict:
    num = ref(numerator) if isinstance(numerator, str) else numerator
    den = ref(denominator) if isinstance(denominator, str) else denominator
    return {
        "name": name,
        "label": name,
        "description": None,
        "type": "ratio",
        "type_params": {"numerator": num, "denominator": den, "metrics": []},
        "filter": where(filter) if filter else None,
    }


def derived(name: str, expr: str, *inputs: str | dict, filter: str | None = None) -> dict:
    metrics = [ref(i) if isinstance(i, str) else i for i in inputs]
    return {
        "name": name,
        "label": name,
        "description": None,
        "type": "derived",
        "type_params": {"expr": expr, "metrics": metrics},
        "filter": where(filter) if filter else None,
    }


TYPE = "{{ Dimension('event__event_type') }}"
SOURCE = "{{ Dimension('event__source') }}"

# dbt_project/models/marts/rollup_minutely.yml's metrics
PROJECT_METRICS = [
    simple("events", "events"),
    simple("page_views", "events", f"{TYPE} = 'page_view'\n"),
    simple("purchases", "events", f"{TYPE} = 'purchase'\n"),
    simple("revenue", "value_sum", f"{TYPE} = 'purchase'\n"),
    ratio("conversion", "purchases", "page_views"),
    derived("average_order_value", "revenue / nullif(purchases, 0)", "revenue", "purchases"),
]


def manifest(*extra_metrics: dict, models: list[dict] | None = None) -> dict:
    return {
        "semantic_models": copy.deepcopy(models if models is not None else [MODEL]),
        "metrics": copy.deepcopy(PROJECT_METRICS) + list(extra_metrics),
        "project_configuration": {},
        "saved_queries": [],
    }


def encoded(doc: dict) -> bytes:
    return json.dumps(doc).encode()
