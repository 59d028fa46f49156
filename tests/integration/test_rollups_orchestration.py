"""The dbt rollups as Dagster assets, against the test stack's PostgreSQL: a day partition builds exactly
that day, dbt tests come back as asset checks, and the daily schedule asks for the look-back days."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import dagster as dg
import pytest

from orchestration.defs.resources import TallyResource
from orchestration.defs.rollups.assets import daily_rollups, day_vars, rollup_views, views_over_daily
from orchestration.defs.rollups.resources import resources as rollup_resources
from orchestration.defs.rollups.schedules import LOOKBACK_DAYS, daily_rollups_schedule
from tally.storage import rollup_store

DAY = datetime(2026, 11, 3, tzinfo=UTC)


@pytest.fixture
def event_type():
    return f"orr{uuid.uuid4().hex[:8]}"


@pytest.fixture
def planted(stack, event_type):
    """Hour rows of two partitions on DAY and the day after, with sketches built by the extension."""
    rows = [
        # (hour offset, partition, count, sum, min, max, users)
        (3, 0, 10, 25.0, 1.0, 9.0, ["a", "b", "c"]),
        (3, 1, 5, 5.0, -2.0, 3.0, ["c", "d"]),
        (20, 0, 1, 100.0, 100.0, 100.0, ["e"]),
        (24 + 5, 0, 7, 7.0, 1.0, 1.0, ["a"]),  # the next day: must not move DAY's row
    ]
    with rollup_store.connect(stack) as conn:
        for hours, part, n, total, lo, hi, users in rows:
            conn.execute(
                "insert into rollup_1h (bucket, event_type, source, kafka_partition, event_count, value_count,"
                " value_sum, value_min, value_max, users, final)"
                " select %s, %s, 'web', %s, %s, %s, %s, %s, %s, (select"
                # hll has no cast back to bytea; its text form is `\\x` + the storage bytes in hex.
                " decode(substr(hll_add_agg(hll_hash_text(u))::text, 3), 'hex') from unnest(%s::text[]) u), true",
                (DAY + timedelta(hours=hours), event_type, part, n, n, total, lo, hi, users),
            )
    yield
    with rollup_store.connect(stack) as conn:
        conn.execute("delete from rollup_1h where event_type = %s", (event_type,))
        conn.execute("delete from analytics.rollup_1d where event_type = %s", (event_type,))


def build(instance, assets, partition_key=None):
    resources = {**rollup_resources().resources, "tally": TallyResource()}
    return dg.materialize(assets, instance=instance, resources=resources, partition_key=partition_key)


def daily_row(stack, event_type, day):
    with rollup_store.connect(stack) as conn:
        return conn.execute(
            "select event_count, value_sum, value_min, value_max, unique_users from analytics.rollup_1d"
            " where event_type = %s and day = %s",
            (event_type, day.date()),
        ).fetchone()


def test_a_day_partition_builds_that_day_from_its_hours_and_runs_the_dbt_tests_as_checks(stack, planted, event_type):
    with dg.DagsterInstance.ephemeral() as instance:
        build(instance, [rollup_views])  # the staging views the daily model reads
        result = build(instance, [daily_rollups], partition_key="2026-11-03")
        assert result.success
        checks = result.get_asset_check_evaluations()
        assert checks and all(c.passed for c in checks), [c.check_name for c in checks if not c.passed]
        assert {c.asset_key for c in checks} == {dg.AssetKey(["rollups", "rollup_1d"])}
        assert build(instance, [views_over_daily]).success
    # Sums over hours and partitions; unique users from the merged sketches (a, b, c, d, e), not 3+2+1.
    assert daily_row(stack, event_type, DAY) == (16, 130.0, -2.0, 100.0, 5)
    assert daily_row(stack, event_type, DAY + timedelta(days=1)) is None


def test_day_vars_cover_whole_utc_days_only():
    assert day_vars(DAY, DAY + timedelta(days=1)) == {"min_day": "2026-11-03", "max_day": "2026-11-04"}
    with pytest.raises(ValueError):
        day_vars(DAY + timedelta(hours=1), DAY + timedelta(days=1, hours=1))


def test_the_daily_schedule_rebuilds_the_look_back_days():
    at = datetime(2026, 11, 10, 0, 30, tzinfo=UTC)
    requests = list(daily_rollups_schedule(dg.build_schedule_context(scheduled_execution_time=at)))
    assert [r.partition_key for r in requests] == ["2026-11-09", "2026-11-08", "2026-11-07"][:LOOKBACK_DAYS]
