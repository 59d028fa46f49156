"""MetricFlow as the reference for Tally's named metrics: for rows planted in the rollup tables (minute
and hour rows, several Kafka partitions, two final days), the SQL MetricFlow compiles for each metric,
run against the dbt view it reads (`rollup_minutely`, built into a schema of this test's own), gives
the numbers `/api/aggregate?metrics=<name>` gives, per minute, hour and day and per source; and again
when the answer comes from the API's cache of final days.

A copy of dbt_project/ with a few more metrics (a max, a min, an `in` filter, a ratio with a filtered
input, a derived metric with its own filter and a constant) exercises more of Tally's reading of the
definitions than the project's six. Planted rows carry sources unique to the run and are deleted
afterwards; the view's schema is dropped."""

from __future__ import annotations

import math
import random
import shutil
import uuid
from collections import defaultdict
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from fastapi.testclient import TestClient

from tally.api.app import create_app
from tally.auth.devissuer import bearer
from tally.semantic.check import CompileOnly
from tally.settings import REPO_ROOT
from tally.sketch import Hll, hash_user
from tally.storage import rollup_store

RUN = f"mf{uuid.uuid4().hex[:6]}"
SCHEMA = f"{RUN}_analytics"
A, B = f"{RUN}-a", f"{RUN}-b"
TODAY = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
DAYS = (TODAY - timedelta(days=3), TODAY - timedelta(days=2))  # final: the stream closed them long ago
TYPES = ("page_view", "purchase", "signup")
PARTITIONS = (0, 1, 2)

EXTRA_METRICS = f"""
  - name: largest_purchase
    label: Largest purchase
    type: simple
    type_params:
      measure: value_max
    filter: |
      {{{{ Dimension('event__event_type') }}}} = 'purchase'

  - name: smallest_value
    label: Smallest value
    type: simple
    type_params:
      measure: value_min

  - name: checkouts
    label: Checkouts
    type: simple
    type_params:
      measure: events
    filter: |
      {{{{ Dimension('event__event_type') }}}} in ('purchase', 'signup')
        or {{{{ Dimension('event__event_type') }}}} like 'zz%'

  - name: share_from_a
    label: Share of events from A
    type: ratio
    type_params:
      numerator:
        name: events
        alias: events_from_a  # MetricFlow's SQL names both sides `events` otherwise (ambiguous)
        filter: |
          {{{{ Dimension('event__source') }}}} = '{A}'
      denominator: events

  - name: a_revenue_per_signup_pct
    label: A's revenue per signup, in hundredths
    type: derived
    type_params:
      expr: 100 * revenue / nullif(signups, 0) - 1
      metrics:
        - revenue
        - name: events
          alias: signups
          filter: |
            {{{{ Dimension('event__event_type') }}}} = 'signup'
    filter: |
      {{{{ Dimension('event__source') }}}} <> '{B}'
"""


def plant_rows(seed: int = 11) -> list[tuple]:
    """Minute rows (bucket, event_type, source, partition, count, value_count, value_sum, min, max):
    some without values, some (minute, source) without purchases; values are binary fractions, so
    sums are exact whatever order rows are added in."""
    rng = random.Random(seed)
    rows = []
    for day in DAYS:
        for hour in (1, 13):
            for minute in (0, 1, 59):
                bucket = day + timedelta(hours=hour, minutes=minute)
                for source in (A, B):
                    for event_type in TYPES:
                        if event_type == "purchase" and rng.random() < 0.25:
                            continue
                        for p in PARTITIONS:
                            count = rng.randint(1, 9)
                            values = [
                                rng.choice([0.5, 2.25, 10.0, 99.75, -3.5]) for _ in range(rng.choice([0, 1, count]))
                            ]
                            rows.append(
                                (
                                    bucket,
                                    event_type,
                                    source,
                                    p,
                                    count,
                                    len(values),
                                    float(sum(values)),
                                    min(values, default=None),
                                    max(values, default=None),
                                )
                            )
    return rows


def hour_rows(rows: list[tuple]) -> list[tuple]:
    """The hour rows the dataflow writes when an hour closes: per partition, its minutes merged."""
    hours: dict[tuple, list] = {}
    for bucket, et, source, p, count, vcount, vsum, vmin, vmax in rows:
        key = (bucket.replace(minute=0), et, source, p)
        h = hours.setdefault(key, [0, 0, 0.0, None, None])
        h[0] += count
        h[1] += vcount
        h[2] += vsum
        h[3] = vmin if h[3] is None else (h[3] if vmin is None else min(h[3], vmin))
        h[4] = vmax if h[4] is None else (h[4] if vmax is None else max(h[4], vmax))
    return [(*key, *h) for key, h in hours.items()]


INSERT = """
insert into {table} (bucket, event_type, source, kafka_partition, event_count, value_count, value_sum,
                     value_min, value_max, users, final)
values (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, true)
"""


@pytest.fixture(scope="module")
def conn(stack):
    with psycopg.connect(stack.pg_dsn, autocommit=True) as c:
        yield c


@pytest.fixture(scope="module")
def planted(conn):
    users = Hll()
    users.add_hashes([hash_user("u1"), hash_user("u2")])
    sketch = users.to_bytes()
    rows = plant_rows()
    with conn.transaction():
        conn.cursor().executemany(INSERT.format(table="rollup_1m"), [(*r, sketch) for r in rows])
        conn.cursor().executemany(INSERT.format(table="rollup_1h"), [(*r, sketch) for r in hour_rows(rows)])
        rollup_store.bump_revision(conn)  # final days changed: cached answers go
    yield rows
    with conn.transaction():
        for table in ("rollup_1m", "rollup_1h"):
            conn.execute(f"delete from {table} where source in (%s, %s)", (A, B))
        rollup_store.bump_revision(conn)


@pytest.fixture(scope="module")
def project(stack, conn, tmp_path_factory):
    """A copy of dbt_project/ with more metrics, parsed, its `rollup_minutely` view (and the staging view
    under it) built into this test's schema: what MetricFlow's SQL reads."""
    from dbt.cli.main import dbtRunner

    project = tmp_path_factory.mktemp("mf-reference") / "dbt_project"
    shutil.copytree(REPO_ROOT / "dbt_project", project, ignore=shutil.ignore_patterns("target", "logs"))
    yml = project / "models" / "marts" / "rollup_minutely.yml"
    yml.write_text(yml.read_text() + EXTRA_METRICS)
    common = ["--project-dir", str(project), "--profiles-dir", str(project)]
    with pytest.MonkeyPatch.context() as env:
        env.setenv("TALLY_DBT_SCHEMA", SCHEMA)
        env.setenv("TALLY_PG_PORT", str(stack.pg_port))
        env.setenv("DO_NOT_TRACK", "1")
        for command in (["parse"], ["run", "--select", "+rollup_minutely"]):
            res = dbtRunner().invoke([*command, *common])
            assert res.success, res.exception or [r.message for r in res.result or []]
    try:
        yield project
    finally:
        conn.execute(f'drop schema if exists "{SCHEMA}" cascade')


@pytest.fixture(scope="module")
def api(stack, project, planted):
    """The API in process (the same app as its workers), reading the copy's manifest."""
    settings = stack.model_copy(update={"dbt_project_dir": project})
    with TestClient(create_app(settings), headers=bearer(settings)) as client:
        yield client


@pytest.fixture(scope="module")
def engine(project):
    pytest.importorskip("metricflow", reason="dbt-metricflow is a dev dependency: make install")
    from metricflow.engine.metricflow_engine import MetricFlowEngine
    from metricflow_semantics.model.dbt_manifest_parser import parse_manifest_from_dbt_generated_manifest
    from metricflow_semantics.model.semantic_manifest_lookup import SemanticManifestLookup

    manifest = parse_manifest_from_dbt_generated_manifest((project / "target" / "semantic_manifest.json").read_text())
    return MetricFlowEngine(SemanticManifestLookup(manifest), CompileOnly()), [m.name for m in manifest.metrics]


GRAINS = {"1m": "minute", "1h": "hour", "1d": "day"}


def metricflow_answer(conn, engine, metric: str, grain: str) -> dict[tuple, object]:
    """(bucket, source) -> value, from the SQL MetricFlow compiles, run on the view; nulls left out."""
    from metricflow.engine.metricflow_engine import MetricFlowQueryRequest

    request = MetricFlowQueryRequest.create(
        metric_names=[metric],
        group_by_names=[f"metric_time__{grain}", "event__source"],
        where_constraints=[f"{{{{ Dimension('event__source') }}}} in ('{A}', '{B}')"],
    )
    sql = engine.explain(request).sql_statement.sql
    return {(t.replace(tzinfo=UTC), s): v for t, s, v in conn.execute(sql).fetchall() if v is not None}


def api_answer(api, metrics: list[str], granularity: str) -> dict[str, dict[tuple, object]]:
    params = [("from", DAYS[0].isoformat()), ("to", (DAYS[1] + timedelta(days=1)).isoformat())]
    params += [("granularity", granularity), ("group_by", "source"), ("metrics", ",".join(metrics))]
    params += [("source", A), ("source", B)]
    r = api.get("/api/aggregate", params=params)
    assert r.status_code == 200, r.text
    out: dict[str, dict[tuple, object]] = defaultdict(dict)
    for s in r.json()["series"]:
        for p in s["points"]:
            assert p["final"]
            for m in metrics:
                if p[m] is not None:
                    out[m][(datetime.fromisoformat(p["t"]), s["group"]["source"])] = p[m]
    return out


def same(a, b) -> bool:
    return a == b or math.isclose(float(a), float(b), rel_tol=1e-12)


def test_every_metric_of_the_copy_is_served(api, engine):
    _, names = engine
    body = api.get("/api/metrics").json()
    assert body["refused"] == []
    assert [m["name"] for m in body["metrics"]] == names
    assert len(names) == 11


@pytest.mark.parametrize("granularity", list(GRAINS))
def test_named_metrics_equal_metricflows_sql_per_bucket_and_source(api, engine, conn, granularity):
    engine, names = engine
    first = api_answer(api, names, granularity)
    cached = api_answer(api, names, granularity)  # both days final: now from the API's cache
    assert cached == first
    for metric in names:
        expected = metricflow_answer(conn, engine, metric, GRAINS[granularity])
        got = first[metric]
        assert got.keys() == expected.keys(), metric
        wrong = {k: (got[k], expected[k]) for k in got if not same(got[k], expected[k])}
        assert not wrong, f"{metric} at {granularity}: (Tally, MetricFlow) {wrong}"
        assert expected, f"{metric}: the planted rows give it no value at all"
