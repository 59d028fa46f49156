"""The daily quality report, built by Dagster for a day with planted data, written where the test
stack's API serves it, and read at /quality with every request off the machine blocked.

The day is 2026-11-05, far from now. Its planted cells have event types of this module's own, in
Kafka partition 93, which no dataflow owns and which has no watermark in the events topic: nothing
folds its late events, and the rollup suite leaves its hours' contract alone. Everything planted
is deleted afterwards. The report itself stays (the stack's latest report).

Planted, in the hour 07:00:
- `<run>.ok`: 4 events stored in Cassandra; the minute row counts 3 (one late event folded in);
  the late ledger holds one folded, one pending and one copy of a counted event: reconciled.
- `<run>.lost`: a minute row counting 5 events Cassandra does not hold: a mismatch of -5.
"""

from __future__ import annotations

import json
import re
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import pytest
from fastapi.testclient import TestClient

from orchestration.defs.quality.assets import STREAM_CHECKS, quality_report
from orchestration.defs.quality.checks import ROLLUP_CHECK
from orchestration.defs.resources import TallyResource
from orchestration.defs.stream import assets as stream
from tally.api.app import create_app
from tally.auth.devissuer import bearer
from tally.cells import Acc, RollupRow
from tally.events.schema import Event, encode_event
from tally.flush import RawBatch
from tally.storage import raw_events, raw_writer, rollup_store

DAY = "2026-11-05"
HOUR = datetime(2026, 11, 5, 7, tzinfo=UTC)
MINUTE = HOUR + timedelta(minutes=10)
PARTITION = 93
SCREENSHOT = Path(__file__).parent.parent.parent / "artifacts" / "quality.png"
# What a page loads: stylesheets, scripts, images. Links a reader may follow (<a href>) are not loads.
LOADS = re.compile(r'<(?:script|link|img)\b[^>]*?\b(?:src|href)="([^"]*)"')
CSS_URL = re.compile(r"url\(\s*['\"]?((?:https?:)?//[^'\")]+)")


def count_acc(n: int) -> Acc:
    acc = Acc()
    for i in range(n):
        acc.add(None, f"u{i}")
    return acc


@pytest.fixture(scope="module")
def built(stack):
    """The report of DAY built through Dagster, with this module's cells planted; the summary."""
    run = f"q{uuid.uuid4().hex[:8]}"
    ok, lost = f"{run}.ok", f"{run}.lost"
    events = [Event(f"{run}-{i}", ok, MINUTE + timedelta(seconds=i), "web") for i in range(4)]
    cluster = raw_events.cluster(stack)
    writer = raw_writer.RawEventWriter(cluster.connect(stack.cassandra_keyspace), stack)
    batch = RawBatch()
    batch.add(events, [int(e.timestamp.timestamp()) for e in events], list(range(4)), [encode_event(e) for e in events])
    writer.write(batch, 0)
    late = [(events[3], None, False), (events[2], "now()", False), (events[1], "now()", True)]  # pending, added, copy
    try:
        with rollup_store.connect(stack) as conn, conn.transaction():
            rollup_store.upsert_row(conn, RollupRow(int(MINUTE.timestamp()), ok, "web", PARTITION, count_acc(3), True))
            minute = int((MINUTE + timedelta(minutes=10)).timestamp())
            rollup_store.upsert_row(conn, RollupRow(minute, lost, "web", PARTITION, count_acc(5), True))
            for event, folded_at, duplicate in late:
                conn.execute(
                    "insert into late_events (event_id, bucket, event_type, source, kafka_partition, event, folded_at,"
                    f" duplicate) values (%s, %s, %s, 'web', %s, %s, {folded_at or 'null'}, %s)",
                    (event.event_id, MINUTE, ok, PARTITION, encode_event(event).decode(), duplicate),
                )
        with dg.DagsterInstance.ephemeral() as instance:
            # What the freshness sensor would have recorded: the report shows the latest result of each check.
            (fresh,) = [k for k in STREAM_CHECKS if k.asset_key == stream.ROLLUP_1M and k.name != ROLLUP_CHECK]
            instance.report_runless_asset_event(
                dg.AssetCheckEvaluation(
                    asset_key=fresh.asset_key, check_name=fresh.name, passed=False, description=f"{run} stale"
                )
            )
            specs = [stream.events_topic, stream.raw_events, stream.rollup_1m, stream.rollup_1h, stream.late_events]
            result = dg.materialize(
                [quality_report, *specs],
                partition_key=DAY,
                instance=instance,
                resources={"tally": TallyResource()},
                selection=[quality_report.key],
            )
            assert result.success
        summary = json.loads((stack.quality_dir / "summary.json").read_text())
        yield {"run": run, "summary": summary, "dir": stack.quality_dir}
    finally:
        with rollup_store.connect(stack) as conn:
            conn.execute("delete from late_events where event_type = %s", (ok,))
            conn.execute("delete from rollup_1m where event_type in (%s, %s)", (ok, lost))
        writer.forget(batch, 0)
        cluster.shutdown()


def test_the_report_counts_late_events_and_reconciles_each_closed_hour(built):
    s, run = built["summary"], built["run"]
    assert s["day"] == DAY and s["status"] == "error" and s["problems"] == []
    (seven,) = [h for h in s["hours"] if h["hour"] == "2026-11-05T07:00:00Z"]
    # Other tests' events may share the day; this module's are all there is in partition 93.
    assert seven["events"] >= 8 and seven["late"] >= 3
    assert seven["late_pending"] >= 1 and seven["late_added"] >= 1 and seven["duplicates"] >= 1
    recon = s["reconciliation"]
    assert recon["hours_checked"] == 24
    mine = [m for m in recon["mismatches"] if m["event_type"].startswith(run)]
    assert mine == [
        {
            "hour": "2026-11-05T07:00:00Z",
            "event_type": f"{run}.lost",
            "source": "web",
            "raw": 0,
            "counted": 5,
            "late_pending": 0,
            "difference": -5,
        }
    ], "the .ok cell reconciles: 4 stored = 3 counted + 1 pending"
    stale = [c for c in s["checks"] if c["asset"] == "stream/rollup_1m" and c["check"] == "freshness_check"]
    assert stale[0]["status"] == "failed" and stale[0]["description"] == f"{run} stale"
    assert {x["suite"] for x in s["suites"]} == {"tally.rollups", "tally.raw_events"}
    page = (built["dir"] / "index.html").read_text()
    assert f"{run}.lost" in page and "-5" in page and "<svg" in page


def test_the_data_docs_hold_the_days_validations_and_load_nothing_from_outside(built):
    site = built["dir"] / "data_docs"
    docs = built["summary"]["data_docs"]
    assert docs["external"] == []
    assert (built["dir"] / docs["index"]).is_file()
    assert set(docs["pages"]) == {"tally.rollups", "tally.raw_events"}
    for page in docs["pages"].values():
        assert f"/{DAY}/" in page and (built["dir"] / page).is_file()
    for page in site.rglob("*.html"):
        text = page.read_text()
        assert not CSS_URL.findall(text), f"{page.relative_to(site)} loads {CSS_URL.findall(text)}"
        for ref in LOADS.findall(text):
            assert not re.match(r"^(https?:)?//", ref), f"{page.relative_to(site)} loads {ref}"
            assert (page.parent / ref).resolve().is_file(), f"{page.relative_to(site)} loads {ref}, which is missing"


def test_the_api_serves_the_report_and_only_the_report(api, built):
    page = api.get("/quality", follow_redirects=True)
    assert page.status_code == 200 and page.url.path == "/quality/"
    assert page.headers["content-type"].startswith("text/html") and DAY in page.text
    assert api.get("/quality/summary.json").json() == built["summary"]
    assert api.get("/quality/data_docs/index.html").status_code == 200
    assert api.get("/quality/data_docs/").text == api.get("/quality/data_docs/index.html").text
    for path in ("nope.html", "gx/great_expectations.yml", "data_docs/..%2Fgx%2Fgreat_expectations.yml", ".lock",
                 "%2e%2e/%2e%2e/pyproject.toml", "..%2F..%2Fpyproject.toml", "%2Fetc%2Fpasswd"):  # fmt: skip
        r = api.get(f"/quality/{path}")
        assert r.status_code == 404, path
    paths = api.get("/openapi.json").json()["paths"]
    assert set(paths["/quality/{path}"]["get"]["responses"]["200"]["content"]) >= {"text/html"}


def test_the_report_and_its_data_docs_render_with_the_network_blocked(api, built, driver):
    SCREENSHOT.parent.mkdir(exist_ok=True)
    seen = driver("quality.mjs", str(api.base_url), str(SCREENSHOT))
    assert seen["errors"] == [], seen["errors"]
    assert seen["blocked"] == [], "the report asked for something outside the API's origin"
    assert seen["failed"] == [], seen["failed"]
    report = seen["report"]
    assert report["url"] == "/quality/" and DAY in report["title"] and report["styled"]
    assert report["status"] == "needs attention" and report["charts"] > 0
    assert any(f"{built['run']}.lost" in row for row in report["mismatches"])
    docs = seen["docs"]
    assert docs["url"].endswith("/quality/data_docs/index.html")
    assert docs["rows"] >= 2 and docs["styled"] and docs["icons"]


def test_without_a_report_the_page_says_how_to_get_one(settings, tmp_path):
    empty = settings.model_copy(update={"state_dir": tmp_path})
    with TestClient(create_app(empty), headers=bearer(empty)) as client:
        r = client.get("/quality/")
        assert r.status_code == 404 and r.headers["content-type"].startswith("text/html")
        assert "No report yet" in r.text and "quality_report" in r.text and "Materialize" in r.text
        assert client.get("/quality", follow_redirects=False).headers["location"] == "/quality/"
        (tmp_path / "secret.txt").write_text("outside the report")
        (tmp_path / "quality").mkdir()
        (tmp_path / "quality" / "out").symlink_to(tmp_path / "secret.txt")
        for path in ("out", "..%2Fsecret.txt", "missing.json"):
            r = client.get(f"/quality/{path}")
            assert r.status_code == 404 and r.headers["content-type"] == "application/problem+json", path
