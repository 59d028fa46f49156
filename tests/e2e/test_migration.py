"""Moving onto Tally from a legacy system, against the real stack: dual write into a legacy
PostgreSQL table and over HTTP (slow, down, refusing), the hourly comparison with a planted
discrepancy, and the staged rollout's share of answers with both systems compared.

The API runs in-process here (its settings differ from the stack's: a legacy side), on the test
stack's Kafka and PostgreSQL; the stack's own dataflow counts the events."""

from __future__ import annotations

import http.server
import json
import random
import threading
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from fastapi.testclient import TestClient
from prometheus_client import REGISTRY

from tally.api.app import create_app
from tally.auth.devissuer import bearer
from tally.legacy import compare
from tally.storage import corrections, rollup_store
from tests.e2e.conftest import iso, wait_for

TYPES = ("a", "b", "c")
EVENTS = 1200


def sample(name: str, labels: dict) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def shadow_results() -> dict[str, float]:
    return {r: sample("tally_rollout_shadow_total", {"result": r}) for r in ("match", "differ", "error", "skipped")}


@pytest.fixture(scope="module")
def legacy_dsn(stack) -> str:
    with rollup_store.connect(stack, autocommit=True) as conn:
        if not conn.execute("select 1 from pg_database where datname = 'legacy'").fetchone():
            conn.execute("create database legacy")
    return stack.pg_dsn.replace(f"dbname={stack.pg_database}", "dbname=legacy")


class Migrated:
    """EVENTS events of one hour three hours ago, sent through an API that dual-writes them into a
    legacy table, then counted by Tally (late, so folded by the correction step)."""

    def __init__(self, stack, legacy_dsn: str):
        self.run = f"m{uuid.uuid4().hex[:6]}"
        self.table = f"legacy_{self.run}"
        self.hour = (datetime.now(UTC) - timedelta(hours=3)).replace(minute=0, second=0, microsecond=0)
        self.settings = stack.model_copy(
            update={"legacy_sink": "postgres", "legacy_dsn": legacy_dsn, "legacy_table": self.table}
        )
        rng = random.Random(7)
        self.events = [
            {
                "event_id": f"{self.run}-{i}",
                "event_type": f"{self.run}.{TYPES[i % 3]}",
                "source": rng.choice(["web", "ios"]),
                "timestamp": iso(self.hour + timedelta(seconds=rng.uniform(0, 3599))),
                "value": round(rng.uniform(0, 100), 2),
            }
            for i in range(EVENTS)
        ]

    def types(self) -> list[str]:
        return [f"{self.run}.{t}" for t in TYPES]

    def legacy_rows(self, where: str = "true") -> int:
        with psycopg.connect(self.settings.legacy_dsn) as conn:
            try:
                return conn.execute(f"select count(*) from {self.table} where {where}").fetchone()[0]  # noqa: S608
            except psycopg.errors.UndefinedTable:
                return 0  # the sink creates it on its first connection, after the API has answered 202


@pytest.fixture(scope="module")
def migrated(stack, legacy_dsn) -> Migrated:
    m = Migrated(stack, legacy_dsn)
    half = EVENTS // 2
    with TestClient(create_app(m.settings), headers=bearer(m.settings)) as client:
        ndjson = "\n".join(json.dumps(e) for e in m.events[:half]) + '\n{"event_id": "bad"}'
        r = client.post("/api/events", content=ndjson, headers={"content-type": "application/x-ndjson"})
        assert r.status_code == 202 and r.json()["accepted"] == half, r.text
        for _ in range(2):  # the second time is a client's retry: nothing new for either system
            r = client.post("/api/events", json=m.events[half:])
            assert r.status_code == 202 and r.json()["accepted"] == EVENTS - half, r.text
        wait_for(lambda: m.legacy_rows() == EVENTS, 60, "every event in the legacy table")

    def counted() -> int:
        with rollup_store.connect(stack) as conn:
            late = conn.execute(
                "select count(*) from late_events where event_type like %s", (f"{m.run}.%",)
            ).fetchone()[0]
            rolled = conn.execute(
                "select coalesce(sum(event_count), 0) from rollup_1m where event_type like %s", (f"{m.run}.%",)
            ).fetchone()[0]
        return late + rolled if late else rolled

    wait_for(lambda: counted() >= EVENTS, 90, "Tally to have every event")
    while corrections.fold_late(stack, until=m.hour + timedelta(hours=1)).rows:
        pass
    return m


def test_dual_write_stores_each_accepted_event_once_in_the_legacy_table(migrated):
    assert migrated.legacy_rows() == EVENTS  # the rejected line was not forwarded, the retry not stored twice
    assert migrated.legacy_rows("event_id = 'bad'") == 0
    by_type = Counter(e["event_type"] for e in migrated.events)
    for event_type, n in by_type.items():
        assert migrated.legacy_rows(f"event_type = '{event_type}'") == n


def test_legacy_and_tally_agree_per_hour_and_event_type(migrated):
    c = compare.compare(migrated.settings, migrated.hour, migrated.hour + timedelta(hours=1))
    ours = {r.event_type: r for r in c.rows if r.event_type.startswith(migrated.run)}
    assert sorted(ours) == migrated.types()
    for event_type, row in ours.items():
        events = [e for e in migrated.events if e["event_type"] == event_type]
        assert (row.legacy_count, row.tally_count) == (len(events), len(events))
        assert row.legacy_sum == pytest.approx(sum(e["value"] for e in events), rel=1e-12)
        assert row.difference <= 1e-12
    assert c.legacy_s > 0 and c.tally_s > 0


def test_the_rollout_routes_its_share_to_legacy_and_both_systems_agree(migrated):
    settings = migrated.settings.model_copy(
        update={"legacy_sink": "off", "legacy_read_share": 0.3, "legacy_shadow": True}
    )
    params = {
        "from": iso(migrated.hour),
        "to": iso(migrated.hour + timedelta(hours=1)),
        "event_type": migrated.types(),
        "group_by": "event_type,source",
        "granularity": "15m",
        "metrics": "count,sum,min,max,avg",
    }
    requests = 300
    before = shadow_results()
    answers: dict[str, list] = {"tally": [], "legacy": []}
    with TestClient(create_app(settings), headers=bearer(settings)) as client:
        for i in range(requests):
            r = client.get("/api/aggregate", params=params)
            assert r.status_code == 200, r.text
            answers[r.headers["x-answered-by"]].append(r.json()["series"])
            # One comparison at a time: more in flight than rollout.MAX_SHADOWS are skipped.
            wait_for(lambda i=i: sum(delta(before, shadow_results()).values()) > i, 30, "the shadow comparison")
        # Metrics only Tally has are Tally's whatever the share.
        for _ in range(20):
            r = client.get("/api/aggregate", params={**params, "metrics": "count,unique_users"})
            assert r.headers["x-answered-by"] == "tally"
    # Binomial(300, 0.3): mean 90, sd 7.9; 4.5 sd either side fails a correct router once in ~150,000 runs.
    assert 55 <= len(answers["legacy"]) <= 125, len(answers["legacy"])
    # The same numbers from both systems, point by point (sums to float rounding).
    tally, legacy = answers["tally"][0], answers["legacy"][0]
    assert [s["group"] for s in tally] == [s["group"] for s in legacy]
    for ts, ls in zip(tally, legacy, strict=True):
        assert [(p["t"][:16], p["count"], p["final"]) for p in ts["points"]] == [
            (p["t"][:16], p["count"], p["final"]) for p in ls["points"]
        ]
        for pt, pl in zip(ts["points"], ls["points"], strict=True):
            for m in ("sum", "min", "max", "avg"):
                assert pt[m] == pytest.approx(pl[m], rel=1e-12)
    # Every answer compared with the other system's, and they agree (counts exactly, sums to 1e-9).
    assert delta(before, shadow_results()) == {"match": requests, "differ": 0, "error": 0, "skipped": 0}


def test_a_planted_discrepancy_fails_the_comparison_check_and_shows_in_the_report(migrated, monkeypatch):
    import dagster as dg

    from orchestration.defs.migration.assets import legacy_comparison
    from orchestration.defs.quality import report_page
    from orchestration.defs.resources import TallyResource

    planted = f"{migrated.run}.b"
    with psycopg.connect(migrated.settings.legacy_dsn, autocommit=True) as conn:
        conn.execute(
            f"delete from {migrated.table} where event_id in"  # noqa: S608
            f" (select event_id from {migrated.table} where event_type = %s order by event_id limit 7)",
            (planted,),
        )
    for key, value in migrated.settings.as_env().items():
        monkeypatch.setenv(key, value)
    result = dg.materialize(
        [legacy_comparison],
        partition_key=migrated.hour.strftime("%Y-%m-%d-%H:00"),
        resources={"tally": TallyResource()},
        raise_on_error=False,
    )
    (check,) = result.get_asset_check_evaluations()
    assert not check.passed
    (event,) = result.get_asset_materialization_events()
    differences = event.materialization.metadata["differences"].value
    n = sum(1 for e in migrated.events if e["event_type"] == planted)
    assert f"| {planted} | {n - 7:,} | {n:,} |" in differences
    assert f"{migrated.run}.a" not in differences and f"{migrated.run}.c" not in differences

    day = migrated.hour.replace(hour=0)
    recorded = compare.recorded(migrated.settings, day, day + timedelta(days=1))
    ours = [d for d in recorded["differing"] if d["event_type"] == planted]
    assert ours and (ours[0]["legacy_count"], ours[0]["tally_count"]) == (n - 7, n)
    page = report_page.render(
        {"day": f"{day:%Y-%m-%d}", "hours": None, "suites": [], "reconciliation": None, "checks": [], "problems": []}
        | {"legacy": recorded, "status": "error", "totals": {}, "built_at": "", "window": {}}
    )
    assert f"<code>{planted}</code>" in page and "Legacy vs Tally" in page

    # Shadow comparison in the API sees the same difference.
    settings = migrated.settings.model_copy(update={"legacy_sink": "off", "legacy_shadow": True})
    before = shadow_results()
    with TestClient(create_app(settings), headers=bearer(settings)) as client:
        for i in range(5):
            r = client.get(
                "/api/aggregate",
                params={
                    "from": iso(migrated.hour),
                    "to": iso(migrated.hour + timedelta(hours=1)),
                    "event_type": [planted, f"{migrated.run}.a"],
                    "group_by": "event_type",
                    "granularity": "1h",
                },
            )
            assert r.headers["x-answered-by"] == "tally"
            wait_for(lambda i=i: sum(delta(before, shadow_results()).values()) > i, 30, "the shadow comparison")
    assert delta(before, shadow_results()) == {"match": 0, "differ": 5, "error": 0, "skipped": 0}


class Legacy(http.server.ThreadingHTTPServer):
    """A legacy ingest endpoint: counts the NDJSON lines it takes; answers `status`, or
    `poison_status` to a body holding `poison`; holds every request until `release` is set."""

    def __init__(self, status: int = 200, poison: bytes | None = None, poison_status: int = 400):
        self.lines: list[bytes] = []
        self.status = status
        self.release = threading.Event()
        self.release.set()
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                body = self.rfile.read(int(self.headers["content-length"]))
                outer.release.wait()
                status = poison_status if poison is not None and poison in body else outer.status
                if status == 200:
                    outer.lines.extend(line for line in body.split(b"\n") if line)
                self.send_response(status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/ingest"


def events(run: str, n: int) -> list[dict]:
    now = datetime.now(UTC)
    return [{"event_id": f"{run}-{i}", "event_type": f"{run}.x", "timestamp": iso(now)} for i in range(n)]


def counters(sink: str = "http") -> dict[str, float]:
    out = {"forwarded": sample("tally_legacy_forwarded_events_total", {"sink": sink})}
    for reason in ("buffer_full", "refused", "failed", "shutdown"):
        out[reason] = sample("tally_legacy_dropped_events_total", {"sink": sink, "reason": reason})
    return out


def delta(before: dict, after: dict) -> dict:
    return {k: after[k] - before[k] for k in before}


def test_a_stalled_legacy_side_never_holds_ingest_and_drops_are_counted(stack, run_id):
    legacy = Legacy()
    legacy.release.clear()  # the legacy side takes requests and never answers until released
    settings = stack.model_copy(
        update={"legacy_sink": "http", "legacy_url": legacy.url, "legacy_buffer_events": 2000}
        | {"legacy_batch_events": 500, "legacy_timeout_s": 60}
    )
    before = counters()
    with TestClient(create_app(settings), headers=bearer(settings)) as client:
        for i in range(10):
            r = client.post("/api/events", json=events(f"{run_id}-{i}", 500))
            assert r.status_code == 202
        # Every request was answered while the legacy side held its first batch: ingest did not wait.
        assert legacy.lines == []
        d = delta(before, counters())
        assert (d["forwarded"], d["buffer_full"]) == (0, 5000 - 2000)
        legacy.release.set()
        wait_for(lambda: len(legacy.lines) == 2000, 30, "the buffered events forwarded")
    d = delta(before, counters())
    assert (d["forwarded"], d["buffer_full"], d["shutdown"]) == (2000, 3000, 0)
    assert len(set(legacy.lines)) == 2000
    legacy.shutdown()


def test_a_legacy_side_that_is_down_or_refuses_loses_nothing_uncounted(stack, run_id):
    down = Legacy()
    url = down.url
    down.shutdown()
    down.server_close()  # nothing listens there now
    settings = stack.model_copy(
        update={"legacy_sink": "http", "legacy_url": url, "legacy_buffer_events": 1000, "legacy_timeout_s": 1}
    )
    before = counters()
    with TestClient(create_app(settings), headers=bearer(settings)) as client:
        for i in range(4):
            assert client.post("/api/events", json=events(f"{run_id}-d{i}", 500)).status_code == 202
    d = delta(before, counters())
    # Accepted = forwarded + dropped: the buffer's 1,000 are counted at shutdown, the rest when it was full.
    assert (d["forwarded"], d["buffer_full"], d["shutdown"]) == (0, 1000, 1000)

    refusing = Legacy(status=400)
    settings = settings.model_copy(update={"legacy_url": refusing.url})
    before = counters()
    with TestClient(create_app(settings), headers=bearer(settings)) as client:
        assert client.post("/api/events", json=events(f"{run_id}-r", 300)).status_code == 202
        wait_for(lambda: delta(before, counters())["refused"] == 300, 10, "the refused batch counted")
    assert delta(before, counters())["forwarded"] == 0
    refusing.shutdown()


@pytest.mark.parametrize("status,reason", [(400, "refused"), (500, "failed")])
def test_one_event_the_legacy_side_cannot_take_is_the_only_one_dropped(stack, run_id, status, reason):
    """A batch is split until the event the legacy side refuses (4xx) or keeps failing on (5xx) is
    alone: the other events of its batch are forwarded, and other clients' events are never held up."""
    sent = events(run_id, 200)
    poison = sent[137]["event_id"].encode()
    legacy = Legacy(poison=b'"' + poison + b'"', poison_status=status)
    settings = stack.model_copy(
        update={"legacy_sink": "http", "legacy_url": legacy.url, "legacy_batch_events": 64, "legacy_timeout_s": 5}
    )
    before = counters()
    with TestClient(create_app(settings), headers=bearer(settings)) as client:
        assert client.post("/api/events", json=sent).status_code == 202
        wait_for(lambda: delta(before, counters())[reason] == 1, 60, f"the one event {reason}")
        wait_for(lambda: len(legacy.lines) == 199, 30, "the others forwarded")
    assert delta(before, counters())["forwarded"] == 199
    assert not any(poison in line for line in legacy.lines)
    legacy.shutdown()
