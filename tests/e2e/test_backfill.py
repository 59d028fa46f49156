"""Backfill against the stream it must agree with: the same events streamed under one prefix and
backfilled from files under another give the same minute and hour cells on every metric and the
same raw events; rows the schema refuses are reported with row, field and reason; a second run
changes nothing; a run killed between its raw writes and its commit, run again, stores each event
once."""

from __future__ import annotations

import csv
import gzip
import json
import random
import subprocess
import sys
import time
import uuid
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta

import httpx
import pytest
import zstandard

from tally.auth.devissuer import bearer
from tally.backfill import sources
from tally.backfill.importer import Backfill
from tally.producer import partition_of
from tally.storage import raw_events, raw_reader, rollup_store
from tests.e2e.conftest import iso, wait_for
from tests.faults.pipeline import own_pipeline

TYPES = ["a", "b", "c"]
SOURCES = ["web", "ios", "api"]
METRICS = ["count", "sum", "min", "max", "unique_users"]


@pytest.fixture(scope="module")
def pipeline(stack):
    with own_pipeline(stack, "backfill") as settings:
        yield settings


class History:
    """Events over an hour boundary yesterday, plus a few at `closing`, when the stream's
    watermark stands: those are in an hour it has not closed."""

    def __init__(self, settings, events: int = 3000, seed: int = 5):
        self.settings = settings
        self.run = f"bf{uuid.uuid4().hex[:6]}"
        self.boundary = (datetime.now(UTC) - timedelta(days=1)).replace(minute=0, second=0, microsecond=0)
        self.start = self.boundary - timedelta(minutes=30)
        self.closing = self.boundary + timedelta(hours=3)
        rng = random.Random(seed)
        self.events = []
        for i in range(events):
            recent = i % 60 == 0
            at = (
                self.closing - timedelta(seconds=20) if recent else self.start + timedelta(seconds=rng.uniform(0, 3600))
            )
            self.events.append(
                {
                    "n": i,
                    "type": rng.choice(TYPES),
                    "timestamp": iso(at + timedelta(microseconds=rng.randrange(1000) * 1000)),
                    "source": rng.choice(SOURCES),
                    "user_id": f"u{rng.randrange(120)}",  # under 160 a cell: unique_users is exact
                    "value": rng.randrange(-50, 100) + rng.choice([0, 0.5, 0.25]),  # sums exact in float
                    "country": rng.choice(["de", "fr"]),
                }
            )

    def lines(self, prefix: str) -> list[dict]:
        return [
            {
                "event_id": f"{self.run}{prefix}-{e['n']}",
                "event_type": f"{self.run}{prefix}.{e['type']}",
                "timestamp": e["timestamp"],
                "source": e["source"],
                "user_id": e["user_id"],
                "value": e["value"],
                "attributes": {"country": e["country"]},
            }
            for e in self.events
        ]

    def clock(self, at: datetime) -> bytes:
        """Events in every partition at `at`: each partition's watermark moves there."""
        lines, covered, i = [], set(), 0
        while len(covered) < self.settings.kafka_partitions:
            event_id = f"{self.run}clock-{at.timestamp():.0f}-{i}"
            covered.add(partition_of(event_id, self.settings.kafka_partitions))
            lines.append(json.dumps({"event_id": event_id, "event_type": f"{self.run}clock", "timestamp": iso(at)}))
            i += 1
        return "\n".join(lines).encode()

    def post(self, body: bytes) -> None:
        r = httpx.post(
            f"http://127.0.0.1:{self.settings.api_port}/api/events",
            content=body,
            headers={"content-type": "application/x-ndjson", **bearer(self.settings)},
            timeout=60,
        )
        assert r.status_code == 202, r.text

    def cells(self, prefix: str, granularity: str = "1m") -> dict:
        """(minute or hour, type without prefix, source) -> every metric, through /api/aggregate."""
        params = [("from", iso(self.start - timedelta(hours=1))), ("to", iso(self.closing + timedelta(hours=1)))]
        params += [("granularity", granularity), ("metrics", ",".join(METRICS)), ("group_by", "event_type,source")]
        params += [("event_type", f"{self.run}{prefix}.{t}") for t in TYPES]
        url = f"http://127.0.0.1:{self.settings.api_port}/api/aggregate"
        r = httpx.get(url, params=params, timeout=60, headers=bearer(self.settings))
        assert r.status_code == 200, r.text
        out = {}
        for s in r.json()["series"]:
            for p in s["points"]:
                if p["count"]:
                    t = s["group"]["event_type"].split(".", 1)[1]
                    out[(p["t"], t, s["group"]["source"])] = tuple(p[m] for m in METRICS)
        return out

    def hour_rows(self, prefix: str) -> dict:
        with rollup_store.connect(self.settings) as conn:
            rows = conn.execute(
                "select bucket, split_part(event_type, '.', 2), source, sum(event_count), sum(value_sum),"
                " min(value_min), max(value_max), hll_cardinality(hll_union_agg(users::hll))::bigint"
                " from rollup_1h where event_type like %s group by 1, 2, 3",
                (f"{self.run}{prefix}.%",),
            ).fetchall()
        return {(b, t, s): tuple(v) for b, t, s, *v in rows}

    def stored(self, prefix: str) -> Counter:
        """Each raw event of the prefix as stored, without its id: (type, time, source, user, value)."""
        cluster = raw_events.cluster(self.settings)
        try:
            reader = raw_reader.RawEventReader(
                cluster.connect(self.settings.cassandra_keyspace), self.settings.kafka_partitions
            )
            out: Counter = Counter()
            hour = self.start.replace(minute=0)
            while hour <= self.closing:
                for t in TYPES:
                    for e in reader.hour(f"{self.run}{prefix}.{t}", raw_events.us(hour)):
                        out[(t, e.timestamp, e.source, e.user_id, e.value, e.event_id.split("-")[1])] += 1
                hour += timedelta(hours=1)
            return out
        finally:
            cluster.shutdown()

    def stream(self, prefix: str) -> None:
        """The events through the API in time order (none late), then every partition three hours on."""
        lines = [json.dumps(e).encode() for e in sorted(self.lines(prefix), key=lambda e: e["timestamp"])]
        for i in range(0, len(lines), 500):
            self.post(b"\n".join(lines[i : i + 500]))
        self.post(self.clock(self.closing))


def _write_files(tmp_path, rows: list[dict], extra: dict[str, list]) -> list:
    """The rows split over NDJSON (gzip), CSV, Parquet and NDJSON (zstd), with `extra` lines
    (already in each format's terms) after each file's own."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    q = len(rows) // 4
    parts = [rows[:q], rows[q : 2 * q], rows[2 * q : 3 * q], rows[3 * q :]]
    paths = [tmp_path / "a.ndjson.gz", tmp_path / "b.csv", tmp_path / "c.parquet", tmp_path / "d.jsonl.zst"]
    with gzip.open(paths[0], "wb") as f:
        f.write(b"\n".join([json.dumps(r).encode() for r in parts[0]] + extra.get("ndjson", [])) + b"\n")
    with open(paths[1], "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["event_id", "event_type", "timestamp", "source", "user_id", "value", "attributes.country"])
        for r in parts[1]:
            w.writerow(
                [
                    r["event_id"],
                    r["event_type"],
                    r["timestamp"],
                    r["source"],
                    r["user_id"],
                    r["value"],
                    r["attributes"]["country"],
                ]
            )
        for row in extra.get("csv", []):
            w.writerow(row)
    table = pa.Table.from_pylist(
        [
            {**r, "timestamp": datetime.fromisoformat(r["timestamp"]), "attributes": json.dumps(r["attributes"])}
            for r in parts[2]
        ]
    )
    pq.write_table(table, paths[2], compression="zstd")
    paths[3].write_bytes(zstandard.ZstdCompressor().compress(b"\n".join(json.dumps(r).encode() for r in parts[3])))
    return paths


def _wait_equal(history: History, streamed: dict) -> None:
    last = [{}]

    def equal() -> bool:
        last[0] = history.cells("b")
        return last[0] == streamed

    try:
        wait_for(equal, 120, "backfilled cells equal to the streamed ones")
    except AssertionError:
        diff = {
            k: (streamed.get(k), last[0].get(k))
            for k in streamed.keys() | last[0].keys()
            if streamed.get(k) != last[0].get(k)
        }
        raise AssertionError(f"{len(diff)} cells differ, e.g. {list(diff.items())[:3]}") from None


def test_a_backfill_gives_what_streaming_the_same_events_gives(pipeline, tmp_path):
    history = History(pipeline)
    history.stream("s")
    streamed: dict = {}

    def counted() -> bool:
        streamed.update(history.cells("s"))
        return sum(v[0] for v in streamed.values()) == len(history.events)

    wait_for(counted, 120, "the streamed events counted")
    streamed = history.cells("s")

    rows = history.lines("b")
    duplicate = rows[7]
    bad = {
        "ndjson": [
            b'{"event_id": "x1", "event_type": "Not A Type", "timestamp": "2026-01-01T00:00:00Z"}',
            b"{not json",
        ],
        "csv": [["x2", f"{history.run}b.a", "yesterday", "web", "u1", "1", "de"], [*duplicate.values()][:6] + ["de"]],
    }
    paths = _write_files(tmp_path, rows, bad)
    identity = f"test:{history.run}"
    backfill = Backfill(pipeline, identity, "test files", chunk_rows=700)
    try:
        progress = backfill.load(sources.rows_of(paths))
        rejects = backfill.rejects()
    finally:
        backfill.close()

    c = progress.counts
    recent = sum(1 for e in history.events if e["n"] % 60 == 0)
    assert (c.rows, c.rejected, c.duplicates) == (len(rows) + 4, 3, 1)
    assert (c.stored, c.via_stream) == (len(rows) - recent, recent)
    q = len(rows) // 4  # rows are numbered from 0 over the inputs in order: the first file's bad lines follow its q
    assert [(row, field) for row, field, _reason in rejects] == [
        (q, "event_type"),
        (q + 1, None),
        (2 * q + 2, "timestamp"),
    ]
    reasons = [reason for _row, _field, reason in rejects]
    assert reasons[0] == "Expected `str` matching regex '^[a-z0-9_.-]{1,64}$'"
    assert reasons[1].startswith("not valid JSON") and reasons[2] == "Invalid RFC3339 encoded datetime"

    _wait_equal(history, streamed)
    assert history.hour_rows("b") == history.hour_rows("s") != {}
    stored_b, stored_s = history.stored("b"), history.stored("s")
    assert stored_b == stored_s and set(stored_b.values()) == {1}
    with rollup_store.connect(pipeline) as conn:
        revision = conn.execute("select revision from rollup_revision").fetchone()

    # Again, the same run: every chunk is found committed and nothing changes.
    again = Backfill(pipeline, identity, "test files", chunk_rows=700)
    try:
        second = again.load(sources.rows_of(paths))
    finally:
        again.close()
    assert second.skipped_chunks == -(-c.rows // 700) and second.counts == c
    # A new run of the same files: every event is found stored already.
    other = Backfill(pipeline, identity + ":other", "test files", chunk_rows=1000)
    try:
        third = other.load(sources.rows_of(paths))
    finally:
        other.close()
    assert (third.counts.stored, third.counts.duplicates + third.counts.via_stream) == (0, len(rows) + 1)
    with rollup_store.connect(pipeline) as conn:
        assert conn.execute("select revision from rollup_revision").fetchone() == revision
    _wait_equal(history, streamed)
    assert history.stored("b") == stored_s


def test_a_backfill_killed_before_its_commit_stores_each_event_once_when_run_again(pipeline, tmp_path, monkeypatch):
    history = History(pipeline, events=1500, seed=8)
    history.post(history.clock(history.closing))  # the stream has closed the history's hours
    wait_for(lambda: _watermarks_at(pipeline, history.closing), 60, "every partition's watermark moved")
    rows = [r for r in history.lines("b") if r["timestamp"] < iso(history.boundary + timedelta(hours=1))]
    path = tmp_path / "history.ndjson"
    path.write_bytes(b"\n".join(json.dumps(r).encode() for r in rows))
    truth: dict = defaultdict(lambda: [0, 0.0])
    for r in rows:
        cell = truth[(r["timestamp"][:16], r["event_type"].split(".")[1], r["source"])]
        cell[0] += 1
        cell[1] += r["value"]

    from tally.storage import rollup_store as store

    add_rows, calls = store.add_rows, []

    def dies_on_the_second_commit(conn, rows):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt("killed between the raw writes and the commit")
        return add_rows(conn, rows)

    # Chunks of 400 rows committed two at a time: the second commit (chunks 2 and 3) dies after
    # their raw events are written.
    settings = pipeline.model_copy(update={"backfill_commit_rows": 800})
    monkeypatch.setattr(store, "add_rows", dies_on_the_second_commit)
    first = Backfill(settings, f"test:{history.run}", "killed", chunk_rows=400)
    with pytest.raises(KeyboardInterrupt):
        first.load(sources.rows_of([path]))
    first.close()
    monkeypatch.setattr(store, "add_rows", add_rows)

    again = Backfill(settings, f"test:{history.run}", "killed", chunk_rows=400)
    try:
        progress = again.load(sources.rows_of([path]))
    finally:
        again.close()
    assert progress.skipped_chunks == 2 and progress.counts.stored == len(rows)
    with rollup_store.connect(pipeline) as conn:
        got = conn.execute(
            "select to_char(bucket at time zone 'UTC', 'YYYY-MM-DD\"T\"HH24:MI'), split_part(event_type, '.', 2),"
            " source, sum(event_count)::int, sum(value_sum) from rollup_1m where event_type like %s group by 1, 2, 3",
            (f"{history.run}b.%",),
        ).fetchall()
    assert {(t, et, s): [n, v] for t, et, s, n, v in got} == dict(truth)
    stored = history.stored("b")
    assert sum(stored.values()) == len(rows) and set(stored.values()) == {1}


def _watermarks_at(settings, at: datetime) -> bool:
    with rollup_store.connect(settings) as conn:
        marks = conn.execute(
            "select watermark from stream_offsets where topic = %s", (settings.events_topic,)
        ).fetchall()
    return len(marks) == settings.kafka_partitions and all(m is not None and m >= at for (m,) in marks)


def test_the_cli_reports_every_row_and_exits_0_with_rejects(stack, tmp_path):
    run = f"cli{uuid.uuid4().hex[:6]}"
    at = iso((datetime.now(UTC) - timedelta(days=2)).replace(minute=5, second=0, microsecond=0))
    path = tmp_path / "events.ndjson"
    path.write_text(
        "\n".join(
            [
                json.dumps({"event_id": f"{run}-1", "event_type": f"{run}.a", "timestamp": at, "value": 2}),
                json.dumps({"event_id": f"{run}-2", "event_type": f"{run}.a", "timestamp": at, "value": "two"}),
                json.dumps({"event_id": f"{run}-1", "event_type": f"{run}.a", "timestamp": at, "value": 2}),
                json.dumps({"event_id": f"{run}-3", "event_type": f"{run}.a", "timestamp": at, "value": 3}),
            ]
        )
    )
    report = tmp_path / "rejects.ndjson"
    out = subprocess.run(
        [sys.executable, "-m", "tally.cli", "backfill", str(path), "--rejects", str(report)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert "rows read 4, stored 2" in out.stdout and "duplicates 1, rejected 1" in out.stdout, out.stdout
    assert [json.loads(line) for line in report.read_text().splitlines()] == [
        {"row": 1, "field": "value", "reason": "Expected `float | null`, got `str`"}
    ]


def test_the_dagster_asset_loads_a_day_and_a_second_run_changes_nothing(stack, tmp_path, monkeypatch):
    import dagster as dg

    from orchestration.defs.migration.assets import history_backfill
    from orchestration.defs.resources import TallyResource

    run = f"dg{uuid.uuid4().hex[:6]}"
    day = (datetime.now(UTC) - timedelta(days=2)).strftime("%Y-%m-%d")
    (tmp_path / day).mkdir()
    lines = [
        json.dumps({"event_id": f"{run}-{i}", "event_type": f"{run}.a", "timestamp": f"{day}T10:{i % 60:02d}:00Z"})
        for i in range(100)
    ]
    (tmp_path / day / "part-0.ndjson").write_text("\n".join([*lines, '{"event_id": "x"}']))
    monkeypatch.setenv("TALLY_BACKFILL_DIR", str(tmp_path))

    def materialize() -> dict:
        result = dg.materialize([history_backfill], partition_key=day, resources={"tally": TallyResource()})
        assert result.success
        (event,) = result.get_asset_materialization_events()
        return {k: v.value for k, v in event.materialization.metadata.items()}

    first = materialize()
    assert (first["rows_read"], first["stored_directly"] + first["through_stream"], first["rejected"]) == (101, 100, 1)
    assert "| 100 | event_type | Object missing required field `event_type` |" in first["rejected_rows"]
    second = materialize()
    assert second["chunks_done_before"] == 1 and second["rows_read"] == 101

    def counted() -> int:
        r = httpx.get(
            f"http://127.0.0.1:{stack.api_port}/api/aggregate",
            headers=bearer(stack),
            params={
                "from": f"{day}T00:00:00Z",
                "to": f"{day}T23:59:00Z",
                "event_type": f"{run}.a",
                "granularity": "1h",
            },
            timeout=30,
        )
        return sum(p["count"] for s in r.json()["series"] for p in s["points"])

    wait_for(lambda: counted() == 100, 120, "the day's events counted")
    time.sleep(2)
    assert counted() == 100


def test_one_input_is_loaded_by_one_process_at_a_time(stack):
    identity = f"test:lock:{uuid.uuid4().hex[:8]}"
    first = Backfill(stack, identity, "locked")
    try:
        with pytest.raises(RuntimeError, match="already running in another process"):
            Backfill(stack, identity, "locked")
    finally:
        first.close()
    Backfill(stack, identity, "locked").close()  # free again once the first has gone


def test_a_legacy_table_is_read_through_a_server_side_cursor(stack):
    run = f"sql{uuid.uuid4().hex[:6]}"
    at = (datetime.now(UTC) - timedelta(days=2)).replace(minute=7, second=0, microsecond=0)
    with rollup_store.connect(stack, autocommit=True) as conn:
        conn.execute(
            f"create table {run} (event_id text, event_type text, timestamp timestamptz, source text,"
            " value numeric, country text)"
        )
        for i in range(30):
            conn.execute(
                f"insert into {run} values (%s, %s, %s, 'pos', %s, 'de')",
                (f"{run}-{i}", f"{run}.sale" if i != 3 else "Bad Type", at, i),
            )
    query = (
        f'select event_id, event_type, timestamp, source, value, country as "attributes.country"'
        f" from {run} where timestamp >= %(start)s order by event_id"
    )
    job = Backfill(stack, f"test:{run}", "legacy table")
    try:
        progress = job.load(sources.sql_rows(stack.pg_dsn, query, {"start": at}, fetch=7))
        rejects = job.rejects()
    finally:
        job.close()
    assert (progress.counts.rows, progress.counts.rejected) == (30, 1)
    assert progress.counts.stored + progress.counts.via_stream == 29
    assert [(field, reason.startswith("Expected `str` matching regex")) for _r, field, reason in rejects] == [
        ("event_type", True)
    ]

    def total() -> float:
        r = httpx.get(
            f"http://127.0.0.1:{stack.api_port}/api/aggregate",
            headers=bearer(stack),
            params={
                "from": iso(at),
                "to": iso(at + timedelta(minutes=1)),
                "event_type": f"{run}.sale",
                "metrics": "count,sum",
            },
            timeout=30,
        )
        return sum(p["sum"] or 0 for s in r.json()["series"] for p in s["points"])

    wait_for(lambda: total() == sum(range(30)) - 3, 120, "the table's values summed")
