"""The dbt project (dbt_project/) on a TimescaleDB engine (the PGlite conformance target, or
TALLY_TIMESCALEDB_DSN): every model builds and every dbt test passes, rollup_1d becomes a hypertable
and stays one through incremental runs and a full refresh, and its numbers are the planted hours
added up over Kafka partitions. PGlite has no `hll` extension: there unique users are unknown (null),
never a number the database cannot compute.

PGlite takes one connection at a time: dbt runs with one thread, and the test opens a connection
only between dbt's invocations (dbt closes its own at the end of each)."""

from __future__ import annotations

import json
from collections import defaultdict
from datetime import UTC, datetime, time, timedelta

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict

from tally.settings import REPO_ROOT
from tally.sketch import Hll
from tally.storage import rollup_store

pytestmark = pytest.mark.timescaledb

PROJECT = REPO_ROOT / "dbt_project"
SCHEMA = "dbtt_tsdb"
TODAY = datetime.now(UTC).date()
DAYS = (TODAY - timedelta(days=2), TODAY - timedelta(days=1))  # inside the default look-back
# (hour, partition, event type, events, values, users): each hour row written by both partitions.
HOURS = [
    (3, 0, "dbtt_view", 10, [1.0, 9.0], ["a", "b"]),
    (3, 1, "dbtt_view", 4, [], ["b"]),
    (15, 0, "dbtt_view", 2, [-2.0], ["c"]),
    (15, 1, "dbtt_buy", 1, [50.0], ["a"]),
]
LATE_HOUR = 15  # one late event, not yet folded, on the second day

VIEWS = {"stg_rollup_1m", "stg_rollup_1h", "stg_late_events", "stg_stream_offsets"}
VIEWS |= {"rollup_minutely", "rollup_1w", "time_spine_minute"}
TABLES = {"rollup_1d", "time_spine_day"}


def hour_rows() -> list[tuple]:
    """The rollup_1h rows, as the stream writes them (sketches from tally.sketch, as the dataflow's)."""
    rows = []
    for i, day in enumerate(DAYS):
        for hour, partition, event_type, count, values, users in HOURS:
            sketch = Hll()
            for u in users:
                sketch.add(u)
            bucket = datetime.combine(day, time(hour), UTC)
            count += i  # the two days differ
            rows.append((bucket, event_type, "web", partition, count, len(values), float(sum(values)),
                         min(values, default=None), max(values, default=None), sketch.to_bytes()))  # fmt: skip
    return rows


def expected_days(rows: list[tuple]) -> dict[tuple, tuple]:
    """(day, event type, source) -> (events, value count, value sum, min, max, late count)."""
    groups: dict[tuple, list[tuple]] = defaultdict(list)
    for r in rows:
        groups[(r[0].date(), r[1], r[2])].append(r)
    out = {}
    for key, rs in groups.items():
        mins = [r[7] for r in rs if r[7] is not None]
        maxs = [r[8] for r in rs if r[8] is not None]
        late = 1 if key == (DAYS[1], "dbtt_view", "web") else 0
        out[key] = (sum(r[4] for r in rs), sum(r[5] for r in rs), sum(r[6] for r in rs),
                    min(mins, default=None), max(maxs, default=None), late)  # fmt: skip
    return out


def expected_users() -> dict[tuple, int]:
    users: dict[tuple, set[str]] = defaultdict(set)
    for day in DAYS:
        for _, _, event_type, _, _, names in HOURS:
            users[(day, event_type, "web")] |= set(names)
    return {key: len(names) for key, names in users.items()}


class Engine:
    """The TimescaleDB engine, one short connection per call (PGlite serves one at a time)."""

    def __init__(self, dsn: str):
        self.dsn = dsn

    def run(self, sql: str, params=None) -> list[tuple]:
        # A timeout, not a hang, if a client (dbt) still held the only connection.
        with psycopg.connect(self.dsn, autocommit=True, connect_timeout=10) as conn:
            cur = conn.execute(sql, params)
            return cur.fetchall() if cur.description else []

    def hypertables(self) -> dict[str, int]:
        rows = self.run(
            "select hypertable_name, num_chunks from timescaledb_information.hypertables where hypertable_schema = %s",
            (SCHEMA,),
        )
        return dict(rows)

    def daily(self) -> dict[tuple, tuple]:
        rows = self.run(
            f"select day, event_type, source, event_count, value_count, value_sum, value_min, value_max,"
            f" late_count, users_hll, unique_users from {SCHEMA}.rollup_1d order by 1, 2, 3"
        )
        return {tuple(r[:3]): tuple(r[3:]) for r in rows}

    def has_hll(self) -> bool:
        return bool(self.run("select 1 from pg_extension where extname = 'hll'"))

    def clean(self) -> None:
        self.run(f"drop schema if exists {SCHEMA} cascade")
        for table in ("rollup_1m", "rollup_1h", "late_events"):
            self.run(f"delete from {table} where event_type like 'dbtt\\_%'")


@pytest.fixture(scope="module")
def engine(timescaledb_dsn) -> Engine:
    """Tally's schema applied (as the stream applies it), the hour rows and a late event planted."""
    with psycopg.connect(timescaledb_dsn, autocommit=True) as conn:
        rollup_store.apply_schema(conn)
    engine = Engine(timescaledb_dsn)
    engine.clean()  # what an interrupted earlier run left
    for row in hour_rows():
        engine.run(
            "insert into rollup_1h (bucket, event_type, source, kafka_partition, event_count, value_count,"
            " value_sum, value_min, value_max, users, final) values (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, true)",
            row,
        )
    engine.run(
        "insert into late_events (event_id, bucket, event_type, source, kafka_partition, event)"
        " values ('dbtt-late-0', %s, 'dbtt_view', 'web', 0, '{}')",
        (datetime.combine(DAYS[1], time(LATE_HOUR, 7), UTC),),
    )
    yield engine
    engine.clean()


@pytest.fixture(scope="module")
def dbt(engine, tmp_path_factory):
    """dbt in this process on the profile's `timescaledb` target, pointed at the engine; one thread.
    Fails on any model or test that fails."""
    from dbt.cli.main import dbtRunner

    # PGlite serves one database whatever the client asks for (`template1`): name the one it serves,
    # or dbt's database-qualified names are cross-database references.
    database = engine.run("select current_database()")[0][0]
    dsn = conninfo_to_dict(engine.dsn)
    target = tmp_path_factory.mktemp("dbt-tsdb-target")
    common = ["--project-dir", str(PROJECT), "--profiles-dir", str(PROJECT)]
    common += ["--target-path", str(target), "--log-path", str(target)]
    with pytest.MonkeyPatch.context() as env:
        env.setenv("TALLY_DBT_TARGET", "timescaledb")
        env.setenv("TALLY_DBT_SCHEMA", SCHEMA)
        env.setenv("TALLY_TIMESCALEDB_HOST", str(dsn.get("host", "127.0.0.1")))
        env.setenv("TALLY_TIMESCALEDB_PORT", str(dsn.get("port", 5432)))
        env.setenv("TALLY_TIMESCALEDB_USER", str(dsn.get("user", "postgres")))
        env.setenv("TALLY_TIMESCALEDB_PASSWORD", str(dsn.get("password", "")))
        env.setenv("TALLY_TIMESCALEDB_DATABASE", database)
        # The profile has no sslmode; libpq reads it from here (PGlite speaks no TLS).
        env.setenv("PGSSLMODE", str(dsn.get("sslmode", "prefer")))
        env.setenv("DO_NOT_TRACK", "1")
        parsed = dbtRunner().invoke(["parse", *common])
        assert parsed.success, parsed.exception
        runner = dbtRunner(manifest=parsed.result)

        def invoke(*args: str, dbt_vars: dict | None = None):
            cli = [*args, *common, "--threads", "1"] + (["--vars", json.dumps(dbt_vars)] if dbt_vars else [])
            res = runner.invoke(cli)
            failed = [
                f"{r.node.name}: {r.status}: {r.message}"
                for r in (res.result or [])
                if r.status not in ("success", "pass")
            ]
            assert res.success and not failed, f"dbt {' '.join(args)} failed: {res.exception or failed}"
            return res

        yield invoke


@pytest.fixture(scope="module")
def built(engine, dbt) -> list[tuple]:
    dbt("build")
    return hour_rows()


def without_users(daily: dict[tuple, tuple]) -> dict[tuple, tuple]:
    return {key: nums[:-2] for key, nums in daily.items()}


def test_every_model_builds_and_rollup_1d_is_a_hypertable(engine, built):
    kinds = dict(
        engine.run("select table_name, table_type from information_schema.tables where table_schema = %s", (SCHEMA,))
    )
    assert {name for name, kind in kinds.items() if kind == "VIEW"} == VIEWS
    assert {name for name, kind in kinds.items() if kind == "BASE TABLE"} == TABLES
    assert engine.hypertables().get("rollup_1d", 0) >= 1  # a hypertable, with its rows in chunks
    for view in VIEWS:
        engine.run(f"select * from {SCHEMA}.{view} limit 1")  # each one answers


def test_daily_rows_add_up_hours_and_partitions_with_users_unknown_without_hll(engine, built):
    daily = engine.daily()
    assert without_users(daily) == expected_days(built)
    weeks = engine.run(f"select sum(event_count), sum(late_count), count(unique_users) from {SCHEMA}.rollup_1w")
    if engine.has_hll():  # a TimescaleDB server with hll: merged sketches, exact for so few users
        assert {key: nums[-1] for key, nums in daily.items()} == expected_users()
        assert weeks[0][:2] == (sum(r[4] for r in built), 1)
    else:  # the sketches cannot be merged here: neither a sketch nor a count, rather than a wrong one
        assert {nums[-2:] for nums in daily.values()} == {(None, None)}
        assert weeks == [(sum(r[4] for r in built), 1, 0)]


def test_an_incremental_run_rewrites_the_changed_day_in_the_hypertable(engine, built, dbt):
    bucket = datetime.combine(DAYS[0], time(3), UTC)
    engine.run(
        "update rollup_1h set event_count = event_count + 5, updated_at = now()"
        " where event_type = 'dbtt_view' and bucket = %s and kafka_partition = 0",
        (bucket,),
    )
    dbt("run", "--select", "rollup_1d")

    expected = expected_days(built)
    key = (DAYS[0], "dbtt_view", "web")
    expected[key] = (expected[key][0] + 5, *expected[key][1:])
    assert without_users(engine.daily()) == expected
    assert "rollup_1d" in engine.hypertables()


def test_a_full_refresh_swaps_in_a_new_table_and_makes_it_a_hypertable_again(engine, built, dbt):
    before = without_users(engine.daily())
    one_day = {"min_day": DAYS[1].isoformat(), "max_day": (DAYS[1] + timedelta(days=1)).isoformat()}
    dbt("run", "--select", "rollup_1d", "--full-refresh")
    dbt("run", "--select", "rollup_1d", dbt_vars=one_day)  # and a day partition's run on top of it
    assert without_users(engine.daily()) == before
    assert engine.hypertables().get("rollup_1d", 0) >= 1
