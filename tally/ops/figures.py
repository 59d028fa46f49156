"""The key figures `tally status` prints under the components, read from Prometheus with the same
recording rules as the dashboards (deploy/prometheus/rules/pipeline.yml)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from tally.ops.prometheus import Prometheus, PrometheusUnavailable

# (key in --json, label, unit, PromQL returning one value); "alerts firing" is counted from the
# list of alerts printed with it, so the two never disagree.
FIGURES = (
    ("events_in_per_s", "events accepted /s", "ops", "tally:events_in:rate1m"),
    ("events_counted_per_s", "events counted /s", "ops", "tally:events_out:rate1m"),
    ("consumer_lag_messages", "consumer lag, worst partition (messages)", "short", "max(tally:consumer_lag_messages)"),
    ("freshness_s", "freshness, worst partition", "s", "max(tally:freshness_seconds)"),
    ("watermark_lag_s", "watermark lag, worst partition", "s", "max(tally:watermark_lag_seconds)"),
)


@dataclass
class Figure:
    key: str
    label: str
    unit: str
    value: float | None  # None: Prometheus has no such series (nothing scraped yet, or a part is down)


async def _read(base_url: str) -> tuple[list[Figure], list[dict]]:
    prom = Prometheus(base_url, timeout_s=3.0)
    try:
        figures = [Figure(key, label, unit, await prom.value(expr)) for key, label, unit, expr in FIGURES]
        alerts = await prom.firing()
        return [*figures, Figure("alerts_firing", "alerts firing", "short", len(alerts))], alerts
    finally:
        await prom.close()


def read(base_url: str) -> tuple[list[Figure], list[dict]] | str:
    """The figures and the alerts firing, or why Prometheus could not be read."""
    try:
        return asyncio.run(_read(base_url))
    except PrometheusUnavailable as e:
        return str(e)


def as_json(figures: list[Figure], alerts: list[dict]) -> dict:
    return {
        "figures": {f.key: f.value for f in figures},
        "alerts": [
            {"name": a["labels"].get("alertname"), "severity": a["labels"].get("severity"), "labels": a["labels"]}
            for a in alerts
        ],
    }


def describe(f: Figure) -> str:
    if f.value is None:
        return "no data"
    if f.unit == "s":
        return f"{f.value:.1f} s"
    return f"{f.value:,.0f}"
