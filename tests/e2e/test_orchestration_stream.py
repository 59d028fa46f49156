"""Dagster's view of the stream, against the real stack: the stream sensor reports the tables the
dataflow writes, their freshness checks pass while it keeps up and fail when it stops while events
keep coming, and the hourly correction's reconciliation fails on a planted mismatch."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta

import dagster as dg
import pytest

from orchestration.defs.corrections.assets import RECONCILED, late_event_corrections
from orchestration.defs.resources import TallyResource
from orchestration.defs.stream import assets as stream_assets
from orchestration.defs.stream.assets import STREAM_TABLES
from orchestration.defs.stream.checks import freshness_checks
from orchestration.defs.stream.sensors import stream_sensor
from tally.stack import runner
from tally.storage import rollup_store
from tests.e2e.conftest import iso, recent_window, wait_for


@pytest.fixture
def instance():
    with dg.DagsterInstance.ephemeral() as inst:
        yield inst


def observe(instance: dg.DagsterInstance, cursor: str | None) -> tuple[list, str | None]:
    """One tick of the stream sensor, its events recorded as the daemon records them."""
    with dg.build_sensor_context(instance=instance, cursor=cursor, resources={"tally": TallyResource()}) as ctx:
        result = stream_sensor(ctx)
    assert isinstance(result, dg.SensorResult), result
    for event in result.asset_events:
        instance.report_runless_asset_event(event)
    return list(result.asset_events), result.cursor


def freshness(instance: dg.DagsterInstance, lower_bound: timedelta) -> dict[dg.AssetKey, bool]:
    """Each stream table's freshness check, run against what the instance has recorded."""
    specs = [stream_assets.events_topic, stream_assets.raw_events, stream_assets.rollup_1m]
    specs += [stream_assets.rollup_1h, stream_assets.late_events, stream_assets.stream_offsets]
    result = dg.materialize(
        [*freshness_checks(lower_bound), *specs], instance=instance, selection=dg.AssetSelection.all_asset_checks()
    )
    verdicts = {e.asset_key: e.passed for e in result.get_asset_check_evaluations()}
    assert set(verdicts) == set(STREAM_TABLES)
    return verdicts


def send(api, run_id: str, n: int, at: datetime) -> None:
    batch = uuid.uuid4().hex[:8]
    events = [
        {"event_id": f"{run_id}-{batch}-{i}", "event_type": f"{run_id}.f", "timestamp": iso(at), "source": "web"}
        for i in range(n)
    ]
    r = api.post("/api/events", json=events)
    assert r.status_code == 202, r.text


def counted(api, run_id: str, at: datetime) -> int:
    minute = at.replace(second=0, microsecond=0)
    params = {"from": iso(minute), "to": iso(minute + timedelta(minutes=1)), "granularity": "1m"}
    body = api.get("/api/aggregate", params={**params, "event_type": f"{run_id}.f"}).json()
    return sum(p["count"] for s in body["series"] for p in s["points"])


def event_time() -> datetime:
    """Recent enough never to be late; fixed for the test, so its count is read from the same minute
    however long it takes (a window that follows the clock would move away from the events)."""
    return recent_window()[0] + timedelta(seconds=30)


def test_stream_tables_are_fresh_while_the_dataflow_keeps_up_and_stale_once_it_stops(
    api, stack, run_id, instance, monkeypatch
):
    at = event_time()
    send(api, run_id, 200, at)
    wait_for(lambda: counted(api, run_id, at) == 200, what="the events to be counted")
    events, cursor = observe(instance, None)
    reported = {e.asset_key for e in events if isinstance(e, dg.AssetMaterialization)}
    assert reported == set(STREAM_TABLES)
    assert all(freshness(instance, timedelta(minutes=2)).values())

    runner.down(stack, ["dataflow"])
    try:
        stopped_at = time.time()
        send(api, run_id, 100, at)  # waiting in Kafka, reflected by no table
        time.sleep(4)
        monkeypatch.setenv("TALLY_STREAM_FRESHNESS_S", "2")
        events, cursor = observe(instance, cursor)
        reported = [e for e in events if e.asset_key in STREAM_TABLES]
        # Nothing new about the tables but the sensor's own verdict on them: stale.
        assert all(isinstance(e, dg.AssetCheckEvaluation) and not e.passed for e in reported), reported
        assert {e.asset_key for e in reported} == set(STREAM_TABLES)
        verdicts = freshness(instance, timedelta(seconds=2))  # the same checks, run as a job
        assert not any(verdicts.values()), verdicts
        monkeypatch.delenv("TALLY_STREAM_FRESHNESS_S")
    finally:
        assert all(r.ok for r in runner.up(stack, ["dataflow"]))
    wait_for(lambda: counted(api, run_id, at) == 300, timeout_s=90, what="the dataflow to catch up")
    events, cursor = observe(instance, cursor)
    stamps = {
        e.metadata["dagster/last_updated_timestamp"].value
        for e in events
        if e.asset_key in STREAM_TABLES and isinstance(e, dg.AssetMaterialization)
    }
    assert stamps and min(stamps) >= stopped_at
    assert all(e.passed for e in events if isinstance(e, dg.AssetCheckEvaluation))
    assert all(freshness(instance, timedelta(minutes=2)).values())


def test_the_hourly_correction_fails_its_reconciliation_on_a_planted_mismatch(api, stack, run_id, instance):
    at = event_time()
    send(api, run_id, 1, at)  # so the stream has a watermark, and this old hour is closed
    wait_for(lambda: counted(api, run_id, at) == 1, what="the event to be counted")
    hour = datetime(2026, 11, 2, 3, tzinfo=UTC)
    with rollup_store.connect(stack) as conn:
        conn.execute(
            "insert into rollup_1m (bucket, event_type, source, kafka_partition, event_count, value_count,"
            " value_sum, users, final) values (%s, %s, 'web', 0, 5, 0, 0, ''::bytea, true)",
            (hour + timedelta(minutes=7), f"{run_id}.planted"),
        )
    try:
        result = dg.materialize(
            [late_event_corrections],
            partition_key=hour.strftime("%Y-%m-%d-%H:%M"),
            instance=instance,
            resources={"tally": TallyResource()},
            raise_on_error=False,
        )
        (check,) = [e for e in result.get_asset_check_evaluations() if e.check_name == RECONCILED]
        assert not check.passed
        assert check.metadata["mismatched_cells"].value == 1
        assert check.metadata["events_counted_twice"].value == 5
        assert f"{run_id}.planted" in check.metadata["cells"].value
    finally:
        with rollup_store.connect(stack) as conn:
            conn.execute("delete from rollup_1m where event_type = %s", (f"{run_id}.planted",))
    result = dg.materialize(
        [late_event_corrections],
        partition_key=hour.strftime("%Y-%m-%d-%H:%M"),
        instance=instance,
        resources={"tally": TallyResource()},
    )
    (check,) = result.get_asset_check_evaluations()
    assert check.passed, check.description
