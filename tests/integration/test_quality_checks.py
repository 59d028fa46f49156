"""The Great Expectations suites as Dagster asset checks, against the real stores: green on a healthy
window, red with ERROR severity and the offending row in their metadata on the fault each is for,
and red naming the store when PostgreSQL cannot be reached. They run through quality_checks_job,
the job the hourly schedule launches, which selects checks alone (the stream's tables are external).

Rows are planted in 2002 with event types of this module's own, in Kafka partition 94 (no dataflow
owns it, and the events topic has no watermark for it, so no hour there counts as closed); raw
events go to Cassandra through the raw writer. Everything is deleted afterwards.
"""

from __future__ import annotations

import socket
import uuid
from datetime import UTC, datetime, timedelta

import dagster as dg
import pytest

from orchestration.defs.quality.checks import (
    RAW_CHECK,
    ROLLUP_CHECK,
    quality_checks,
    raw_event_expectations,
    rollup_expectations,
)
from orchestration.defs.quality.schedules import daily_quality_report, hourly_quality_checks, quality_checks_job
from orchestration.defs.resources import TallyResource
from orchestration.defs.stream import assets as stream
from tally.cells import Acc, RollupRow
from tally.events.schema import Event, encode_event
from tally.flush import RawBatch
from tally.storage import raw_events, raw_writer, rollup_store

HEALTHY = datetime(2002, 7, 1, 10, tzinfo=UTC)
FAULTY = datetime(2002, 8, 1, 10, tzinfo=UTC)
PARTITION = 94
SPECS = [stream.events_topic, stream.raw_events, stream.rollup_1m, stream.rollup_1h, stream.late_events]
# What the code location holds for this job (tests/unit/test_orchestration_loads.py loads all of it).
DEFS = dg.Definitions(
    assets=SPECS, asset_checks=quality_checks, jobs=[quality_checks_job], resources={"tally": TallyResource()}
)


@pytest.fixture(scope="module")
def planted(stack):
    """Plants a healthy hour and a faulty one; yields this module's event type prefix."""
    run = f"qc{uuid.uuid4().hex[:6]}"
    cluster = raw_events.cluster(stack)
    writer = raw_writer.RawEventWriter(cluster.connect(stack.cassandra_keyspace), stack)
    batches = []
    healthy = [
        Event(f"{run}-ok-{i}", f"{run}.ok", HEALTHY + timedelta(seconds=9 * i), "web", "u1", float(i)) for i in range(5)
    ]
    faulty = [Event(f"{run}-bad-0", f"{run}.bad", FAULTY + timedelta(seconds=4), "we\x01b")]  # a control character
    for events in (healthy, faulty):
        batch = RawBatch()
        batch.add(events, [int(e.timestamp.timestamp()) for e in events], list(range(len(events))),
                  [encode_event(e) for e in events])  # fmt: skip
        writer.write(batch, 0)
        batches.append(batch)
    ok, inverted = Acc(), Acc()
    for e in healthy:
        ok.add(e.value, e.user_id)
    inverted.add(1.0, "u1")
    inverted.add(5.0, "u2")
    inverted.value_min, inverted.value_max = 5.0, 1.0
    try:
        with rollup_store.connect(stack) as conn, conn.transaction():
            rollup_store.upsert_row(conn, RollupRow(int(HEALTHY.timestamp()), f"{run}.ok", "web", PARTITION, ok, True))
            bad = RollupRow(int(FAULTY.timestamp()), f"{run}.bad", "web", PARTITION, inverted, True)
            rollup_store.upsert_row(conn, bad)
        yield run
    finally:
        with rollup_store.connect(stack) as conn:
            conn.execute("delete from rollup_1m where event_type in (%s, %s)", (f"{run}.ok", f"{run}.bad"))
        for batch in batches:
            writer.forget(batch, 0)
        cluster.shutdown()


def run_checks(hour: datetime) -> dict[tuple[str, str], dg.AssetCheckEvaluation]:
    """quality_checks_job over the one hour starting at `hour`, as the schedule would launch it."""
    window = {"hours": 0, "until": (hour + timedelta(minutes=59)).isoformat()}
    rollups, raw = rollup_expectations.node_def.name, raw_event_expectations.node_def.name
    config = {"ops": {rollups: {"config": window}, raw: {"config": {**window, "sample": 100}}}}
    with dg.DagsterInstance.ephemeral() as instance:
        result = DEFS.resolve_job_def(quality_checks_job.name).execute_in_process(run_config=config, instance=instance)
    assert result.success
    return {(e.asset_key.to_user_string(), e.check_name): e for e in result.get_asset_check_evaluations()}


def test_every_check_is_green_on_a_healthy_window(planted):
    found = run_checks(HEALTHY)
    assert set(found) == {
        ("stream/rollup_1m", ROLLUP_CHECK),
        ("stream/rollup_1h", ROLLUP_CHECK),
        ("stream/raw_events", RAW_CHECK),
    }
    for key, e in found.items():
        assert e.passed, (key, e.description)
        assert e.description.startswith("2002-07-01 10:00-10:59 UTC: all"), e.description
        assert e.metadata["expectations_broken"].value == 0
    assert found[("stream/raw_events", RAW_CHECK)].metadata["rows_checked"].value >= 5


def test_a_row_with_min_above_max_and_a_raw_event_with_a_control_character_fail_with_error(planted):
    found = run_checks(FAULTY)
    minutes = found[("stream/rollup_1m", ROLLUP_CHECK)]
    assert not minutes.passed and minutes.severity == dg.AssetCheckSeverity.ERROR
    assert "value_min <= value_max" in minutes.description
    assert "value_min <= value_max | ERROR | 1 |" in minutes.metadata["broken_expectations"].value
    assert f"{planted}.bad" in minutes.metadata["examples"].value
    assert minutes.metadata["unexpected_rows"].value == 1
    # The planted row is a minute row: the hour table is not blamed for it.
    assert found[("stream/rollup_1h", ROLLUP_CHECK)].passed
    raw = found[("stream/raw_events", RAW_CHECK)]
    assert not raw.passed and raw.severity == dg.AssetCheckSeverity.ERROR
    assert "control characters" in raw.metadata["broken_expectations"].value
    assert f"{planted}-bad-0" in raw.metadata["examples"].value


def test_an_unreachable_postgres_fails_every_check_naming_it(planted, monkeypatch):
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("TALLY_PG_PORT", str(port))
    found = run_checks(HEALTHY)
    assert len(found) == 3
    for key, e in found.items():
        assert not e.passed and e.severity == dg.AssetCheckSeverity.ERROR, key
        assert f"not checked, a store cannot be reached: PostgreSQL at 127.0.0.1:{port}" in e.description, key
        assert "refused" in e.metadata["error"].value, key


def test_the_schedules_launch_the_checks_hourly_and_the_report_for_the_day_before():
    assert hourly_quality_checks.job_name == quality_checks_job.name
    assert hourly_quality_checks.cron_schedule == "20 * * * *"
    with dg.build_schedule_context(scheduled_execution_time=datetime(2026, 11, 27, 0, 45, tzinfo=UTC)) as context:
        (request,) = [daily_quality_report(context)]
    assert request.partition_key == "2026-11-26"
