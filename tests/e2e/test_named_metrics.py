"""Named metrics end to end: an API of its own (started by the same code as `tally up`, on the test
stack's Kafka, PostgreSQL and Cassandra) serving the metrics of a copy of dbt_project/. A metric added
to the YAML is served within seconds of `tally metrics` (what `make metrics` runs); the named metrics
give the numbers the built-in ones give for the same events; a broken definition never replaces the
last valid set; the UI offers and charts them.

The API is its own, not the test stack's, so the code under test is the tree's and the manifest is the
copy's. Its events carry sources unique to the test run, so other tests' purchases and page views
(the metrics filter on those fixed event types) never mix in."""

from __future__ import annotations

import math
import os
import random
import shutil
import subprocess
import sys
import time
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from tally.auth.devissuer import bearer
from tally.settings import REPO_ROOT, Settings
from tally.stack import runner
from tests.e2e.conftest import iso, recent_window, wait_for

LARGEST_PURCHASE = """
  - name: largest_purchase
    label: Largest purchase
    description: The largest value of a `purchase` event.
    type: simple
    type_params:
      measure: value_max
    filter: |
      {{ Dimension('event__event_type') }} = 'purchase'
"""
BY_COUNTRY = """
  - name: by_country
    label: Events from Germany
    type: simple
    type_params:
      measure: events
    filter: |
      {{ Dimension('event__country') }} = 'de'
"""
NAMED = "events,page_views,purchases,revenue,conversion,average_order_value"
TALLY = str(Path(sys.executable).parent / "tally")


def copy_project(to: Path) -> Path:
    shutil.copytree(REPO_ROOT / "dbt_project", to, ignore=shutil.ignore_patterns("target", "logs"))
    return to


def make_metrics(settings: Settings) -> subprocess.CompletedProcess:
    """`make metrics` for the copy: what its recipe runs, with the copy's settings."""
    env = {**os.environ, **settings.as_env()}
    return subprocess.run([TALLY, "metrics"], env=env, capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def own_api(stack: Settings, tmp_path_factory):
    """An API process of its own, serving the named metrics of a copy of dbt_project/. Started like
    `tally up` starts the stack's (runner.up -> Api.prepare parses the project, then uvicorn)."""
    project = copy_project(tmp_path_factory.mktemp("named-metrics") / "dbt_project")
    settings = stack.model_copy(
        update={
            "state_dir": stack.state_dir / "pipelines" / "named-metrics",
            "api_port": stack.api_port + 200,
            "dbt_project_dir": project,
        }
    )
    runner.down(settings, ["api"])  # what an interrupted run left
    results = runner.up(settings, ["api"])
    try:
        assert all(r.ok for r in results), [r.message for r in results]
        base = f"http://127.0.0.1:{settings.api_port}"
        with httpx.Client(base_url=base, timeout=30, headers=bearer(settings)) as client:
            client.settings = settings
            yield client
    finally:
        runner.down(settings, ["api"])


def metric_names(api) -> list[str]:
    return [m["name"] for m in api.get("/api/metrics").json()["metrics"]]


def steadily(api, check, what: str, timeout_s: float = 20) -> float:
    """Until `check` holds for six answers in a row: each of the API's workers reads the file itself."""
    streak = 0

    def held() -> bool:
        nonlocal streak
        streak = streak + 1 if check(api.get("/api/metrics").json()) else 0
        return streak >= 6

    return wait_for(held, timeout_s, what)


def test_tally_up_writes_the_manifest_and_the_api_serves_the_projects_metrics(own_api):
    assert (own_api.settings.semantic_manifest_path).exists()
    body = own_api.get("/api/metrics").json()
    assert [m["name"] for m in body["metrics"]][:6] == NAMED.split(",")
    assert body["builtin"] == ["count", "sum", "min", "max", "avg", "unique_users", "late_count"]
    conversion = next(m for m in body["metrics"] if m["name"] == "conversion")
    assert conversion["type"] == "ratio" and conversion["label"] == "Conversion (purchases per page view)"
    assert conversion["numerator"] == {"metric": "purchases"} and conversion["denominator"] == {"metric": "page_views"}
    assert body["refused"] == [] and "problem" not in body


@pytest.fixture(scope="module")
def largest_purchase(own_api) -> tuple[float, float]:
    """An analyst's new metric: added to the copy's YAML, `make metrics`, then served by every worker.
    Returns how long each step took."""
    yml = own_api.settings.dbt_project_dir / "models" / "marts" / "rollup_minutely.yml"
    yml.write_text(yml.read_text() + LARGEST_PURCHASE)
    t0 = time.monotonic()
    done = make_metrics(own_api.settings)
    assert done.returncode == 0, done.stderr
    assert "largest_purchase" in done.stdout
    parse_s = time.monotonic() - t0
    seen_s = steadily(own_api, lambda b: "largest_purchase" in [m["name"] for m in b["metrics"]], "the new metric")
    return parse_s, seen_s


def test_a_metric_added_to_the_yaml_is_served_within_seconds_of_make_metrics(own_api, largest_purchase):
    parse_s, seen_s = largest_purchase
    print(f"make metrics {parse_s:.1f} s, then served by every worker {seen_s:.1f} s later")
    assert seen_s < 10
    (added,) = [m for m in own_api.get("/api/metrics").json()["metrics"] if m["name"] == "largest_purchase"]
    assert added["label"] == "Largest purchase" and added["measure"] == {
        "name": "value_max",
        "agg": "max",
        "column": "value_max",
    }


def test_an_unknown_metric_is_refused_naming_the_field_and_every_known_metric(own_api):
    r = own_api.get(
        "/api/aggregate",
        params={"from": "2026-11-26T00:00:00Z", "to": "2026-11-27T00:00:00Z", "metrics": "count,orders"},
    )
    assert r.status_code == 422
    (error,) = r.json()["errors"]
    assert error["field"] == "metrics"
    assert "'orders'" in error["message"]
    for known in ["count", "unique_users", "late_count", *NAMED.split(",")]:
        assert known in error["message"]


def make_events(run_id: str, start: datetime) -> list[dict]:
    """Page views, purchases (each with a value) and add-to-carts in two minutes from two sources of
    this run's own; one (minute, source) has page views and no purchase."""
    rng = random.Random(run_id)
    events = []
    for source in (f"{run_id}-web", f"{run_id}-ios"):
        for minute in range(2):
            purchases = 0 if (source.endswith("ios") and minute == 1) else rng.randint(1, 5)
            for event_type, n in (("page_view", rng.randint(5, 12)), ("purchase", purchases), ("add_to_cart", 3)):
                for _ in range(n):
                    e = {
                        "event_id": f"{run_id}-{len(events)}",
                        "event_type": event_type,
                        "timestamp": iso(start + timedelta(minutes=minute, seconds=rng.uniform(0, 59.9))),
                        "source": source,
                        "user_id": f"u{rng.randrange(20)}",
                    }
                    if event_type == "purchase":
                        e["value"] = rng.choice([7.0, 10.5, 20.25, 99.75])  # binary fractions: exact sums
                    events.append(e)
    return events


def truth(events: list[dict], step: timedelta) -> dict[tuple, dict]:
    """(bucket, source) -> counts by event type, and purchases' value sum and max."""
    cells: dict[tuple, dict] = defaultdict(lambda: {"page_view": 0, "purchase": 0, "add_to_cart": 0, "values": []})
    for e in events:
        t = datetime.fromisoformat(e["timestamp"])
        bucket = datetime.fromtimestamp(t.timestamp() // step.total_seconds() * step.total_seconds(), UTC)
        cell = cells[(bucket, e["source"])]
        cell[e["event_type"]] += 1
        if e["event_type"] == "purchase":
            cell["values"].append(e["value"])
    return cells


def points(body: dict, *group: str) -> dict[tuple, dict]:
    return {
        (datetime.fromisoformat(p["t"]), *(s["group"][g] for g in group)): p
        for s in body["series"]
        for p in s["points"]
    }


@pytest.fixture(scope="module")
def sent(own_api) -> tuple[list[dict], str, datetime]:
    run_id = f"nm{random.randrange(16**8):08x}"
    start, _ = recent_window()
    events = make_events(run_id, start)
    assert own_api.post("/api/events", json=events).json()["accepted"] == len(events)
    sources = sorted({e["source"] for e in events})
    params = [("from", iso(start - timedelta(hours=1))), ("to", iso(start + timedelta(hours=1)))]
    params += [("source", s) for s in sources]

    def counted() -> bool:
        body = own_api.get("/api/aggregate", params=params).json()
        return sum(p["count"] for s in body["series"] for p in s["points"]) == len(events)

    wait_for(counted, 60, "the named-metrics events to be counted")
    return events, run_id, start


@pytest.mark.parametrize("granularity", ["1m", "1h"])
def test_named_metrics_give_the_numbers_of_the_built_ins_per_bucket_and_source(
    own_api, sent, largest_purchase, granularity
):
    events, _run_id, start = sent
    sources = sorted({e["source"] for e in events})
    step = timedelta(minutes=1) if granularity == "1m" else timedelta(hours=1)
    common = [("from", iso(start - timedelta(hours=1))), ("to", iso(start + timedelta(hours=1)))]
    common += [("granularity", granularity)] + [("source", s) for s in sources]
    named = own_api.get(
        "/api/aggregate", params=common + [("metrics", f"count,{NAMED},largest_purchase"), ("group_by", "source")]
    )
    assert named.status_code == 200, named.text
    builtin = own_api.get(
        "/api/aggregate", params=common + [("metrics", "count,sum,max"), ("group_by", "event_type,source")]
    )
    named_points, builtin_points = points(named.json(), "source"), points(builtin.json(), "event_type", "source")
    expected = truth(events, step)
    assert set(named_points) == set(expected)
    for (t, source), p in named_points.items():
        cell = expected[(t, source)]
        views = builtin_points.get((t, "page_view", source), {}).get("count")
        buys = builtin_points.get((t, "purchase", source), {})
        # Against the built-ins over the same events...
        assert p["events"] == p["count"]
        assert p["page_views"] == views
        assert p["purchases"] == buys.get("count")
        assert p["revenue"] == buys.get("sum")
        assert p["largest_purchase"] == buys.get("max")
        # ...and against what was sent. A bucket without purchases has none of the purchase
        # metrics (MetricFlow returns no row there), so no conversion either.
        assert p["events"] == cell["page_view"] + cell["purchase"] + cell["add_to_cart"]
        assert p["page_views"] == cell["page_view"]
        if cell["purchase"]:
            assert p["purchases"] == cell["purchase"]
            assert p["revenue"] == sum(cell["values"])
            assert p["largest_purchase"] == max(cell["values"])
            assert math.isclose(p["conversion"], cell["purchase"] / cell["page_view"], rel_tol=1e-12)
            assert math.isclose(p["average_order_value"], sum(cell["values"]) / cell["purchase"], rel_tol=1e-12)
        else:
            assert p["purchases"] is p["revenue"] is p["conversion"] is p["average_order_value"] is None


def test_named_metrics_per_event_type_have_values_only_in_the_groups_their_filter_keeps(own_api, sent):
    events, _run_id, start = sent
    sources = sorted({e["source"] for e in events})
    params = [("from", iso(start)), ("to", iso(start + timedelta(minutes=2))), ("granularity", "1m")]
    params += [("source", s) for s in sources] + [
        ("metrics", "purchases,count,conversion"),
        ("group_by", "event_type,source"),
    ]
    body = own_api.get("/api/aggregate", params=params).json()
    assert body["metrics"] == ["purchases", "count", "conversion"]
    for (_t, event_type, _source), p in points(body, "event_type", "source").items():
        assert list(p) == ["t", "purchases", "count", "conversion", "final"]
        assert p["purchases"] == (p["count"] if event_type == "purchase" else None)
        assert p["conversion"] is None  # a group is one event type: never purchases and page views both


def test_a_broken_definition_never_replaces_the_last_valid_set(own_api, sent):
    settings = own_api.settings
    yml = settings.dbt_project_dir / "models" / "marts" / "rollup_minutely.yml"
    valid_yaml = yml.read_text()
    before = metric_names(own_api)
    events, _run_id, start = sent
    query = [("from", iso(start)), ("to", iso(start + timedelta(minutes=2))), ("metrics", "purchases,conversion")]
    query += [("source", s) for s in sorted({e["source"] for e in events})]
    answer = own_api.get("/api/aggregate", params=query).json()["series"]
    try:
        # An analyst's YAML mistake: `make metrics` fails with dbt's message and changes nothing.
        yml.write_text(valid_yaml + "\n  - name: refunds\n    type: simple\n    type_params: {measure: refund_total}\n")
        done = make_metrics(settings)
        assert done.returncode == 1 and "refund_total" in done.stderr, done.stderr
        # A metric MetricFlow refuses: so does `make metrics`, with MetricFlow's words, and Tally's.
        yml.write_text(valid_yaml + BY_COUNTRY)
        done = make_metrics(settings)
        assert done.returncode == 1, done.stderr
        assert (
            "MetricFlow" in done.stderr and "Dimension('event__country'), which the rollups do not hold" in done.stderr
        )
        time.sleep(2.5)
        assert metric_names(own_api) == before

        # A manifest written by something else, cut short: the API keeps what it had and says why.
        settings.semantic_manifest_path.write_text('{"semantic_models": [], "metrics": [')
        steadily(own_api, lambda b: "not a valid semantic manifest" in (b.get("problem") or ""), "the problem shown")
        assert metric_names(own_api) == before
        assert own_api.get("/api/aggregate", params=query).json()["series"] == answer
    finally:
        yml.write_text(valid_yaml)
        assert make_metrics(settings).returncode == 0
    steadily(own_api, lambda b: "problem" not in b and [m["name"] for m in b["metrics"]] == before, "the fixed set")


def test_the_ui_offers_named_metrics_after_the_built_ins_and_charts_them(own_api, sent, driver):
    events, run_id, _start = sent
    source = f"{run_id}-web"
    seen = driver("named_metrics.mjs", str(own_api.base_url), "revenue", source)
    assert seen["errors"] == [], f"{seen['errors']} at step {seen.get('step')!r}, banner {seen.get('error_banner')!r}"
    assert seen["error_banner"] == ""
    builtin = ["count", "sum", "avg", "min", "max", "unique_users", "late_count"]
    values = [v for v, _label in seen["options"]]
    assert values[: len(builtin)] == builtin
    assert values[len(builtin) : len(builtin) + 6] == NAMED.split(",")
    assert ["revenue", "Revenue"] in seen["options"] and seen["axis"] == "Revenue"
    # Revenue is a sum: minutes without purchases are drawn as 0 (tests/e2e/test_ui.py), compared as absent.
    charted = {datetime.fromtimestamp(t, UTC): v for t, v in seen["series"] if v}
    expected = {t: sum(c["values"]) for (t, s), c in truth(events, timedelta(minutes=1)).items() if s == source}
    assert charted == {t: v for t, v in expected.items() if v}
