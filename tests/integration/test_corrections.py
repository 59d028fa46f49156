"""The correction step folds closed hours' late events into the rollups, once, and nothing else,
and a failure at any point of it leaves what a rerun completes to the same result."""

from __future__ import annotations

import uuid
from collections import Counter
from datetime import timedelta

import psycopg
import pytest

from tally.events.schema import Event
from tally.storage import late_copies, raw_events, raw_reader, rollup_store
from tally.storage.corrections import fold_late
from tally.storage.reconcile import reconcile
from tests.integration.test_reconcile import H0, HOURS, events, mismatches, pipeline


def counts(stack, et: str, table: str = "rollup_1m", hour=H0) -> tuple[int, int]:
    with rollup_store.connect(stack) as conn:
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
    with rollup_store.connect(stack) as conn:
        return conn.execute("select revision from rollup_revision").fetchone()[0]


def stored(stack, et: str) -> Counter:
    """How many times raw storage holds each event_id of hour 0."""
    cluster = raw_events.cluster(stack)
    try:
        reader = raw_reader.RawEventReader(cluster.connect(stack.cassandra_keyspace), stack.kafka_partitions)
        return Counter(e.event_id for e in reader.hour(et, raw_events.us(H0)))
    finally:
        cluster.shutdown()


def beyond_horizon(stack) -> tuple[str, Event, Event, int]:
    """An event type whose closed hour 0 also got copies after the dataflow forgot their ids (beyond
    the dedup horizon), which are late too: `first` again, counted on time already, and `late`
    twice (the ledger keeps its first copy; raw storage gets both).
    Returns (event type, first, late, events counted on time in hour 0)."""
    et = f"fold.{uuid.uuid4().hex[:8]}"
    on_time = events(et, 4)
    first = on_time[10]
    late = Event(f"{et}-late", et, H0 + timedelta(minutes=5, seconds=1), "web")
    pipeline(stack, et, [on_time[:1000], on_time[1000:], [first, late], [late]])
    in_hour0 = sum(1 for e in on_time if e.timestamp < H0 + timedelta(hours=1))
    assert counts(stack, et) == (in_hour0, 2)
    assert stored(stack, et)[first.event_id] == 2 and stored(stack, et)[late.event_id] == 2
    # Until corrected, the reconciliation shows the copy.
    assert mismatches(stack, et) == {(H0, first.source): -1}
    return et, first, late, in_hour0


def assert_counted_once_and_stored_once(stack, et: str, first: Event, late: Event, in_hour0: int) -> None:
    assert counts(stack, et) == (in_hour0 + 1, 0)  # `late` added once, the copy of `first` not at all
    assert counts(stack, et, "rollup_1h") == (in_hour0 + 1, 0)  # the hour row stays the sum of its minutes
    kept = stored(stack, et)
    assert kept[first.event_id] == 1 and kept[late.event_id] == 1 and set(kept.values()) == {1}
    with rollup_store.connect(stack) as conn:
        marked = conn.execute("select event_id from late_events where event_type = %s and duplicate", (et,)).fetchall()
    assert marked == [(first.event_id,)]
    assert mismatches(stack, et) == {}


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
    et, first, late, in_hour0 = beyond_horizon(stack)

    folded = fold_late(stack, topic=f"test-{et}")
    assert folded.events >= 1 and folded.duplicates >= 1
    assert_counted_once_and_stored_once(stack, et, first, late, in_hour0)
    fold_late(stack, topic=f"test-{et}")  # again: nothing changes
    assert_counted_once_and_stored_once(stack, et, first, late, in_hour0)


def test_a_commit_that_fails_changes_nothing_and_the_rerun_counts_and_stores_once(stack, monkeypatch):
    et, first, late, in_hour0 = beyond_horizon(stack)

    def connection_lost(conn):  # the last statement before the decisions commit
        raise psycopg.OperationalError("server closed the connection unexpectedly")

    monkeypatch.setattr(rollup_store, "bump_revision", connection_lost)
    with pytest.raises(psycopg.OperationalError):
        fold_late(stack, topic=f"test-{et}")
    assert counts(stack, et) == (in_hour0, 2)
    assert counts(stack, et, "rollup_1h") == (in_hour0, 2)
    assert stored(stack, et)[first.event_id] == 2 and stored(stack, et)[late.event_id] == 2
    assert mismatches(stack, et) == {(H0, first.source): -1}

    monkeypatch.undo()
    fold_late(stack, topic=f"test-{et}")
    assert_counted_once_and_stored_once(stack, et, first, late, in_hour0)


@pytest.mark.parametrize("done", [0, 1, 2], ids=["before_raw_rewrite", "half_way", "after_raw_rewrite"])
def test_a_rerun_completes_a_step_that_died_after_committing_its_decisions(stack, monkeypatch, done):
    """The step dies after its decisions committed, having taken `done` of the two recorded copies
    out of raw storage, before it could record that."""
    et, first, late, in_hour0 = beyond_horizon(stack)
    remove = late_copies.remove

    def dies_part_way(settings, removals):
        remove(settings, [r for r in removals if r.event_type == et][:done])
        raise SystemExit("killed")

    monkeypatch.setattr(late_copies, "remove", dies_part_way)
    with pytest.raises(SystemExit):
        fold_late(stack, topic=f"test-{et}")
    assert counts(stack, et) == (in_hour0 + 1, 0)  # the decisions are committed: counted once already
    assert mismatches(stack, et) == {}
    copies = stored(stack, et)
    assert sorted([copies[first.event_id], copies[late.event_id]]) == [[2, 2], [1, 2], [1, 1]][done]

    monkeypatch.undo()
    fold_late(stack, topic=f"test-{et}")
    assert_counted_once_and_stored_once(stack, et, first, late, in_hour0)
    fold_late(stack, topic=f"test-{et}")  # again: nothing changes
    assert_counted_once_and_stored_once(stack, et, first, late, in_hour0)
