"""The correction step folds closed hours' late events into the rollups, once, and nothing else."""

from __future__ import annotations

import uuid
from collections import Counter
from datetime import timedelta

from tally.events.schema import Event
from tally.storage import raw_events, rollups
from tally.storage.corrections import fold_late
from tally.storage.reconcile import reconcile
from tests.integration.test_reconcile import H0, HOURS, events, pipeline


def counts(stack, et: str, table: str = "rollup_1m", hour=H0) -> tuple[int, int]:
    with rollups.connect(stack) as conn:
        minutes = conn.execute(
            f"select coalesce(sum(event_count), 0) from {table} where event_type = %s and bucket >= %s and bucket < %s",
            (et, hour, hour + timedelta(hours=1)),
        ).fetchone()[0]
        unfolded = conn.execute(
            "select count(*) from late_events where event_type = %s and bucket >= %s and bucket < %s"
            " and folded_at is null",
            (et, hour, hour + timedelta(hours=1)),
        ).fetchone()[0]
    return minutes, unfolded


def revision(stack) -> int:
    with rollups.connect(stack) as conn:
        return conn.execute("select revision from rollup_revision").fetchone()[0]


def test_late_events_of_closed_hours_are_folded_once_and_open_hours_wait(stack):
    et = f"fold.{uuid.uuid4().hex[:8]}"
    on_time = events(et, 3)  # two hours of events: after them, hour 0 is closed and hour 1 is open
    late_closed = [
        Event(f"{et}-lc{i}", et, H0 + timedelta(minutes=5, seconds=i), "web", f"u{i}", 1.0) for i in range(7)
    ]
    late_open = [Event(f"{et}-lo{i}", et, H0 + timedelta(hours=1, minutes=2), "ios") for i in range(3)]
    pipeline(stack, et, [on_time[:1000], on_time[1000:], late_closed + late_open])
    in_hour0 = sum(1 for e in on_time if e.timestamp < H0 + timedelta(hours=1))
    assert counts(stack, et) == (in_hour0, 7)
    before = revision(stack)

    folded = fold_late(stack, topic=f"test-{et}")
    assert folded.events >= 7  # other tests' closed late events may be folded too
    assert counts(stack, et) == (in_hour0 + 7, 0)
    assert counts(stack, et, "rollup_1h") == (in_hour0 + 7, 0)  # the hour row stays the sum of its minutes
    assert counts(stack, et, hour=H0 + timedelta(hours=1))[1] == 3  # its hour is still open: not yet
    assert revision(stack) > before  # API workers drop their cached final days

    assert fold_late(stack, topic=f"test-{et}").events == 0  # run again: nothing is added twice
    assert counts(stack, et) == (in_hour0 + 7, 0)
    assert [m for m in reconcile(stack, H0, H0 + HOURS) if m.event_type == et] == []


def test_copies_beyond_the_dedup_horizon_are_counted_once_and_stored_once(stack):
    et = f"fold.{uuid.uuid4().hex[:8]}"
    on_time = events(et, 4)
    first = on_time[10]  # counted on time in hour 0
    late = Event(f"{et}-late", et, H0 + timedelta(minutes=5, seconds=1), "web")
    # Copies coming after the dataflow forgot the ids (beyond the horizon) are late too: `first`
    # again, and `late` twice (the ledger keeps its first copy; raw storage gets both).
    pipeline(stack, et, [on_time[:1000], on_time[1000:], [first, late], [late]])
    in_hour0 = sum(1 for e in on_time if e.timestamp < H0 + timedelta(hours=1))
    assert counts(stack, et) == (in_hour0, 2)
    assert [(m.hour, m.source, m.difference) for m in reconcile(stack, H0, H0 + HOURS) if m.event_type == et] == [
        (H0, first.source, -1)  # until corrected, the reconciliation shows the copy
    ]

    folded = fold_late(stack, topic=f"test-{et}")
    assert folded.events >= 1 and folded.duplicates >= 1
    assert counts(stack, et) == (in_hour0 + 1, 0)  # `late` added once, the copy of `first` not at all
    assert counts(stack, et, "rollup_1h") == (in_hour0 + 1, 0)
    cluster = raw_events.cluster(stack)
    reader = raw_events.RawEventReader(cluster.connect(stack.cassandra_keyspace), stack.kafka_partitions)
    stored = Counter(e.event_id for e in reader.hour(et, raw_events.us(H0)))
    cluster.shutdown()
    assert stored[first.event_id] == 1 and stored[late.event_id] == 1 and set(stored.values()) == {1}
    with rollups.connect(stack) as conn:
        marked = conn.execute("select event_id from late_events where event_type = %s and duplicate", (et,)).fetchall()
    assert marked == [(first.event_id,)]
    assert [m for m in reconcile(stack, H0, H0 + HOURS) if m.event_type == et] == []
    fold_late(stack, topic=f"test-{et}")  # again: nothing changes
    assert counts(stack, et) == (in_hour0 + 1, 0)
