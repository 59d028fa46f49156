"""The dbt project (dbt_project/) on the test stack's PostgreSQL: daily rollups are the planted rows
added up over Kafka partitions, unique users are the union of the sketches (never a sum), a late
correction reaches the days within the look-back and no other, and an exact day window rebuilds that
day alone.

The rows planted here have event types starting with `dbtt_` and are deleted afterwards; dbt builds
into a schema of its own (`dbtt_analytics`, dropped afterwards), so a developer's `analytics` is
never touched."""

from __future__ import annotations

import json
import random
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta

import psycopg
import pytest

from tally.semantic.check import CompileOnly
from tally.settings import REPO_ROOT

PROJECT = REPO_ROOT / "dbt_project"
SCHEMA = "dbtt_analytics"
TODAY = datetime.now(UTC).date()
# Two days inside the default look-back (3 days before the newest day built) and one far outside it.
OLD, MID, RECENT = TODAY - timedelta(days=10), TODAY - timedelta(days=2), TODAY - timedelta(days=1)
EVENT_TYPES = ("dbtt_buy", "dbtt_view")
SOURCES = ("web", "ios")
PARTITIONS = (0, 1)
USERS = [f"user-{i}" for i in range(40)]  # few enough that the sketches stay exact (explicit mode)


@dataclass
class MinuteRow:
    bucket: datetime
    event_type: str
    source: str
    partition: int
    event_count: int
    values: list[float]
    users: list[str] = field(default_factory=list)


def plant_rows(seed: int = 7) -> list[MinuteRow]:
    """Two minutes in each of two hours of each day, per event type, source and partition; users
    overlap across partitions and hours, and some rows carry no value."""
    rng = random.Random(seed)
    rows = []
    for day in (OLD, MID, RECENT):
        for hour in (3, 15):
            for minute in (0, 30):
                bucket = datetime.combine(day, time(hour, minute), UTC)
                for et in EVENT_TYPES:
                    for source in SOURCES:
                        for partition in PARTITIONS:
                            users = rng.sample(USERS, rng.randint(1, 8))
                            count = len(users) + rng.randint(0, 5)
                            values = [round(rng.uniform(-5, 100), 2) for _ in range(rng.choice([0, 1, count]))]
                            rows.append(MinuteRow(bucket, et, source, partition, count, values, users))
    return rows


# (event type, source, minute, folded): late events of RECENT; `dbtt_lateonly` has no rollup rows at all.
LATE_EVENTS = [
    ("dbtt_buy", "web", time(15, 31), False),
    ("dbtt_buy", "web", time(15, 32), False),
    ("dbtt_buy", "web", time(15, 33), True),
    ("dbtt_lateonly", "web", time(3, 1), False),
]

MINUTE_SQL = """
insert into rollup_1m (bucket, event_type, source, kafka_partition, event_count, value_count, value_sum,
                       value_min, value_max, users, final)
select %s, %s, %s, %s, %s, %s, %s, %s, %s,
       (select decode(substr(hll_add_agg(hll_hash_text(u))::text, 3), 'hex') from unnest(%s::text[]) u), true
on conflict (event_type, source, bucket, kafka_partition) do update set
    event_count = excluded.event_count, value_count = excluded.value_count, value_sum = excluded.value_sum,
    value_min = excluded.value_min, value_max = excluded.value_max, users = excluded.users, updated_at = now()
"""
# The hour rows as the dataflow writes them: per partition, the merge of that hour's minute rows.
HOUR_SQL = """
insert into rollup_1h (bucket, event_type, source, kafka_partition, event_count, value_count, value_sum,
                       value_min, value_max, users, final)
select date_trunc('hour', bucket at time zone 'UTC') at time zone 'UTC', event_type, source, kafka_partition,
       sum(event_count), sum(value_count), sum(value_sum), min(value_min), max(value_max),
       decode(substr(hll_union_agg(users::hll)::text, 3), 'hex'), true
from rollup_1m
where event_type like 'dbtt\\_%%' and bucket >= %s and bucket < %s
group by 1, 2, 3, 4
on conflict (event_type, source, bucket, kafka_partition) do update set
    event_count = excluded.event_count, value_count = excluded.value_count, value_sum = excluded.value_sum,
    value_min = excluded.value_min, value_max = excluded.value_max, users = excluded.users, updated_at = now()
"""


def write_minute(conn, r: MinuteRow) -> None:
    v = r.values
    conn.execute(
        MINUTE_SQL,
        (
            r.bucket,
            r.event_type,
            r.source,
            r.partition,
            r.event_count,
            len(v),
            float(sum(v)),
            min(v, default=None),
            max(v, default=None),
            r.users,
        ),
    )


def write_hours(conn, start: datetime, end: datetime) -> None:
    conn.execute(HOUR_SQL, (start, end))


def delete_planted(conn) -> None:
    for table in ("rollup_1m", "rollup_1h", "late_events"):
        conn.execute(f"delete from {table} where event_type like 'dbtt\\_%'")


def expected_days(rows: list[MinuteRow]) -> dict[tuple, tuple]:
    """rollup_1d's numbers computed from the planted rows: (day, event type, source) ->
    (events, value count, value sum, min, max, unique users, late count)."""
    groups: dict[tuple, list[MinuteRow]] = defaultdict(list)
    for r in rows:
        groups[(r.bucket.date(), r.event_type, r.source)].append(r)
    late: dict[tuple, int] = defaultdict(int)
    for et, source, _, folded in LATE_EVENTS:
        if not folded:
            late[(RECENT, et, source)] += 1
    out = {}
    for key in groups.keys() | late.keys():
        rs = groups.get(key, [])
        values = [v for r in rs for v in r.values]
        out[key] = (
            sum(r.event_count for r in rs),
            len(values),
            round(sum(values), 6),
            min(values, default=None),
            max(values, default=None),
            len({u for r in rs for u in r.users}),
            late.get(key, 0),
        )
    return out


def built_days(conn) -> dict[tuple, tuple]:
    """rollup_1d's planted rows: key -> (the numbers of expected_days, built_at)."""
    rows = conn.execute(
        f"select day, event_type, source, event_count, value_count, round(value_sum::numeric, 6)::float8,"
        f" value_min, value_max, unique_users, late_count, built_at"
        f" from {SCHEMA}.rollup_1d where event_type like 'dbtt\\_%'"
    ).fetchall()
    return {(d, et, s): (tuple(rest[:-1]), rest[-1]) for d, et, s, *rest in rows}


def numbers(days: dict[tuple, tuple]) -> dict[tuple, tuple]:
    return {key: nums for key, (nums, _) in days.items()}


@pytest.fixture(scope="module")
def conn(stack):
    with psycopg.connect(stack.pg_dsn, autocommit=True) as c:
        if c.execute("select 1 from pg_extension where extname = 'hll'").fetchone() is None:
            pytest.skip("the hll extension is not installed in this PostgreSQL")
        delete_planted(c)  # what an interrupted earlier run left
        c.execute(f"drop schema if exists {SCHEMA} cascade")
        yield c
        delete_planted(c)
        c.execute(f"drop schema if exists {SCHEMA} cascade")


@pytest.fixture(scope="module")
def planted(conn) -> list[MinuteRow]:
    rows = plant_rows()
    for r in rows:
        write_minute(conn, r)
    write_hours(conn, datetime.combine(OLD, time(), UTC), datetime.combine(TODAY, time(), UTC))
    for i, (et, source, minute, folded) in enumerate(LATE_EVENTS):
        conn.execute(
            "insert into late_events (event_id, bucket, event_type, source, kafka_partition, event, folded_at)"
            " values (%s, %s, %s, %s, 0, '{}', case when %s then now() end)",
            (f"dbtt-late-{i}", datetime.combine(RECENT, minute, UTC), et, source, folded),
        )
    return rows


@pytest.fixture(scope="module")
def dbt(stack, tmp_path_factory):
    """Runs dbt in this process (a subprocess would import and parse again each time, ~5 s):
    parsed once, then every command reuses the manifest. Fails on any model or test that fails."""
    from dbt.cli.main import dbtRunner

    target = tmp_path_factory.mktemp("dbt-target")
    common = [
        "--project-dir",
        str(PROJECT),
        "--profiles-dir",
        str(PROJECT),
        "--target-path",
        str(target),
        "--log-path",
        str(target),
    ]
    with pytest.MonkeyPatch.context() as env:
        env.setenv("TALLY_DBT_SCHEMA", SCHEMA)
        env.setenv("TALLY_PG_PORT", str(stack.pg_port))
        env.setenv("DO_NOT_TRACK", "1")
        parsed = dbtRunner().invoke(["parse", *common])
        assert parsed.success, parsed.exception
        runner = dbtRunner(manifest=parsed.result)

        def invoke(*args: str, dbt_vars: dict | None = None):
            cli = [*args, *common] + (["--vars", json.dumps(dbt_vars)] if dbt_vars else [])
            res = runner.invoke(cli)
            failed = [
                f"{r.node.name}: {r.status}: {r.message}"
                for r in (res.result or [])
                if r.status not in ("success", "pass")
            ]
            assert res.success and not failed, f"dbt {' '.join(args)} failed: {res.exception or failed}"
            return res

        invoke.target = target
        yield invoke


@pytest.fixture(scope="module")
def built(conn, planted, dbt) -> list[MinuteRow]:
    dbt("build", "--full-refresh")
    return planted


def test_daily_rows_add_up_partitions_and_hours_and_merge_users_as_sketches(conn, built):
    assert numbers(built_days(conn)) == expected_days(built)


def test_unique_users_are_the_union_of_the_sketches_not_a_sum(conn, built):
    day_key = (MID, "dbtt_buy", "web")
    start, end = datetime.combine(MID, time(), UTC), datetime.combine(MID + timedelta(days=1), time(), UTC)
    union, summed = conn.execute(
        "select round(hll_cardinality(hll_union_agg(users::hll))), sum(hll_cardinality(users::hll))"
        " from rollup_1h where event_type = %s and source = %s and bucket >= %s and bucket < %s",
        (day_key[1], day_key[2], start, end),
    ).fetchone()
    got = numbers(built_days(conn))[day_key][5]
    assert got == union
    assert got < summed  # the planted users overlap across partitions and hours


def correct(conn, rows: list[MinuteRow], day: date, extra_user: str) -> None:
    """What the correction step does with late events: rewrite a closed minute row, then its hour."""
    r = next(r for r in rows if r.bucket.date() == day and r.event_type == "dbtt_buy" and r.source == "web")
    r.event_count += 3
    r.values.append(1000.0)
    r.users.append(extra_user)
    write_minute(conn, r)
    write_hours(conn, r.bucket.replace(minute=0), r.bucket.replace(minute=0) + timedelta(hours=1))


def test_an_incremental_run_rebuilds_the_days_within_the_lookback(conn, built, dbt):
    before = built_days(conn)
    correct(conn, built, MID, "late-user-mid")
    correct(conn, built, OLD, "late-user-old")

    dbt("run", "--select", "rollup_1d")

    after, expected = built_days(conn), expected_days(built)
    for key, (nums, built_at) in after.items():
        if key[0] == OLD:  # beyond the look-back: untouched, the correction not seen yet
            assert (nums, built_at) == before[key]
        else:
            assert nums == expected[key]
            assert built_at > before[key][1]
    assert after[(MID, "dbtt_buy", "web")][0] != before[(MID, "dbtt_buy", "web")][0]


def test_min_day_and_max_day_rebuild_exactly_that_day(conn, built, dbt):
    correct(conn, built, OLD, "late-user-old-2")
    correct(conn, built, RECENT, "late-user-recent")
    before = built_days(conn)

    one_day = {"min_day": OLD.isoformat(), "max_day": (OLD + timedelta(days=1)).isoformat()}
    dbt("run", "--select", "rollup_1d", dbt_vars=one_day)

    after, expected = built_days(conn), expected_days(built)
    for key, (nums, built_at) in after.items():
        if key[0] == OLD:
            assert nums == expected[key]
            assert built_at > before[key][1]
        else:  # RECENT's correction waits for its own run
            assert (nums, built_at) == before[key]
    assert after[(RECENT, "dbtt_buy", "web")][0] != expected[(RECENT, "dbtt_buy", "web")]


# The semantic layer, checked by MetricFlow itself (dbt-metricflow, a dev dependency): its validations,
# then every metric compiled to SQL and run, since some mistakes (a filter on a dimension the rollups
# do not have, say) only show when a metric is compiled.

GROUP_BY = ["metric_time__day", "event__event_type", "event__source"]


def metricflow_check(manifest_json: str, where: list[str] | None = None) -> tuple[list[str], dict[str, str]]:
    """MetricFlow's objections to a semantic manifest (dbt's target/semantic_manifest.json), and the
    SQL of each metric grouped by day and every dimension."""
    from metricflow.engine.metricflow_engine import MetricFlowEngine, MetricFlowQueryRequest
    from metricflow_semantic_interfaces.validations.semantic_manifest_validator import SemanticManifestValidator
    from metricflow_semantics.model.dbt_manifest_parser import parse_manifest_from_dbt_generated_manifest
    from metricflow_semantics.model.semantic_manifest_lookup import SemanticManifestLookup

    manifest = parse_manifest_from_dbt_generated_manifest(manifest_json)
    results = SemanticManifestValidator().validate_semantic_manifest(manifest)
    if problems := [issue.as_readable_str() for issue in (*results.errors, *results.future_errors)]:
        return problems, {}
    try:
        engine = MetricFlowEngine(SemanticManifestLookup(manifest), CompileOnly())
    except Exception as e:  # MetricFlow raises plain exceptions (KeyError, ...) for what it cannot link
        return [f"{type(e).__name__}: {e}"], {}
    sql = {}
    for metric in manifest.metrics:
        request = MetricFlowQueryRequest.create(
            metric_names=[metric.name], group_by_names=GROUP_BY, where_constraints=where
        )
        try:
            sql[metric.name] = engine.explain(request).sql_statement.sql
        except Exception as e:
            problems.append(f"metric {metric.name}: {e}")
    return problems, sql


@pytest.fixture(scope="module")
def semantic_manifest(dbt) -> str:
    pytest.importorskip("metricflow", reason="dbt-metricflow is a dev dependency: make install")
    return (dbt.target / "semantic_manifest.json").read_text()


def test_metricflow_accepts_the_semantic_layer_and_every_metric_runs(conn, built, semantic_manifest):
    problems, sql = metricflow_check(semantic_manifest)
    assert problems == [], "MetricFlow refuses the semantic layer:\n" + "\n".join(problems)
    assert {"events", "page_views", "purchases", "revenue", "conversion", "average_order_value"} <= sql.keys()
    for metric, query in sql.items():
        try:
            conn.execute(f"select * from ({query}) answer limit 0")
        except psycopg.Error as e:
            pytest.fail(f"metric {metric} compiles to SQL PostgreSQL refuses: {e}\n{query}")


def test_metricflow_refuses_a_filter_on_a_dimension_the_rollups_lack(semantic_manifest):
    manifest = json.loads(semantic_manifest)
    metric = next(m for m in manifest["metrics"] if m["name"] == "page_views")
    metric["filter"]["where_filters"][0]["where_sql_template"] = "{{ Dimension('event__country') }} = 'de'"
    problems, _ = metricflow_check(json.dumps(manifest))
    assert any("page_views" in p and "event__country" in p for p in problems), problems


def test_metrics_answer_from_the_planted_rows(conn, built, semantic_manifest):
    where = ["{{ Dimension('event__event_type') }} like 'dbtt\\_%'"]
    problems, sql = metricflow_check(semantic_manifest, where)
    assert problems == []
    answer = {(d.date(), et, s): int(n) for d, et, s, n in conn.execute(sql["events"]).fetchall()}
    expected: dict[tuple, int] = defaultdict(int)
    for r in built:
        expected[(r.bucket.date(), r.event_type, r.source)] += r.event_count
    assert answer == expected
