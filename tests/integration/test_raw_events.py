"""Raw events in Cassandra chunks: a replay after a crash overwrites, never duplicates."""

from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime, timedelta

import msgspec
import pytest

from tally.events.schema import Event, encode_event
from tally.flush import RawBatch
from tally.storage import raw_events, raw_reader, raw_writer


@pytest.fixture(scope="module")
def session(stack):
    cluster = raw_events.cluster(stack)
    yield cluster.connect(stack.cassandra_keyspace)
    cluster.shutdown()


def make_raw(event_type: str, n: int, start: datetime):
    rng = random.Random(9)
    events = [
        Event(f"r{i:04d}", event_type, start + timedelta(milliseconds=rng.randrange(3000)), "web", f"u{i % 3}")
        for i in range(n)
    ]
    return [(1000 + i, e, encode_event(e)) for i, e in enumerate(events)]


def stored_count(session, event_type: str, start: datetime) -> int:
    hour = start.replace(minute=0, second=0, microsecond=0)
    rows = session.execute(
        "select events from event_chunks where event_type = %s and hour = %s and shard = 0", (event_type, hour)
    )
    return sum(len(msgspec.json.decode(r.events)) for r in rows)


def test_a_replay_with_other_flush_boundaries_overwrites_the_uncommitted_chunks(stack, session):
    event_type = f"raw.{uuid.uuid4().hex[:8]}"
    start = datetime.now(UTC).replace(minute=10, second=0, microsecond=0)
    raw = make_raw(event_type, 300, start)
    writer = raw_writer.RawEventWriter(session, stack)
    writer.write(RawBatch.of(raw), shard=0)  # written, then the process died before committing the offset
    writer.write(RawBatch.of(raw[:120]), shard=0)  # the replay resumes at the same offset, flushes at other points
    writer.write(RawBatch.of(raw[120:]), shard=0)
    writer.write(RawBatch.of(raw[120:]), shard=0)  # and a retry of a flush
    assert stored_count(session, event_type, start) == 300

    reader = raw_reader.RawEventReader(session, shards=1)
    q = raw_reader.RawQuery([event_type], start, start + timedelta(minutes=1), limit=1000)
    bodies, cursor = reader.page(q)
    assert cursor is None
    got = [msgspec.json.decode(b)["event_id"] for b in bodies]
    want = [e.event_id for _o, e, _v in sorted(raw, key=lambda r: (-raw_events.us(r[1].timestamp), r[1].event_id))]
    assert got == want


def test_a_huge_second_of_one_event_type_is_split_into_bounded_rows(stack, session):
    event_type = f"raw.{uuid.uuid4().hex[:8]}"
    start = datetime.now(UTC).replace(minute=20, second=0, microsecond=0)
    events = [
        Event(f"big{i:05d}", event_type, start + timedelta(microseconds=i), "web", "u", None, {"pad": "x" * 200})
        for i in range(9000)
    ]
    raw = [(i, e, encode_event(e)) for i, e in enumerate(events)]
    raw_writer.RawEventWriter(session, stack).write(RawBatch.of(raw), shard=0)  # ~2.3 MB in one second: several rows
    hour = start.replace(minute=0)
    rows = list(
        session.execute(
            "select first_offset, events from event_chunks where event_type = %s and hour = %s and shard = 0",
            (event_type, hour),
        )
    )
    assert len(rows) >= 3 and all(len(r.events) <= raw_writer.PIECE_BYTES + 2 for r in rows)
    assert stored_count(session, event_type, start) == 9000
    reader = raw_reader.RawEventReader(session, shards=1)
    q = raw_reader.RawQuery([event_type], start, start + timedelta(minutes=1), limit=1000)
    seen = []
    while True:
        bodies, cursor = reader.page(q)
        seen += [msgspec.json.decode(b)["event_id"] for b in bodies]
        if cursor is None:
            break
        q.cursor = cursor
    assert seen == [f"big{i:05d}" for i in reversed(range(9000))]


def test_rows_cassandra_refuses_are_reported_by_position_and_the_rest_is_written(stack, session):
    # A partition key Cassandra cannot hold (over 64 KiB: the event schema never lets one through,
    # so this batch is built by hand) beside small rows batched with it and a large row on its own.
    start = datetime(2026, 3, 4, 5, 6, 7, tzinfo=UTC)
    good, big = f"raw.ok.{uuid.uuid4().hex[:6]}", f"raw.big.{uuid.uuid4().hex[:6]}"
    bad = "x" * 70_000
    raw = RawBatch()
    fat = "y" * 200
    for k, (et, n, attr) in enumerate([(good, 5, ""), (bad, 3, ""), (big, 2000, fat)]):
        events = [Event(f"{et[:8]}-{i}", et, start, "web", attributes={"a": attr} if attr else None) for i in range(n)]
        lines = [encode_event(e) for e in events]
        raw.add(events, [int(start.timestamp())] * n, [k << 20 | i for i in range(n)], lines)
    writer = raw_writer.RawEventWriter(session, stack)
    with pytest.raises(raw_writer.RefusedRows) as refused:
        writer.write(raw, shard=0)
    assert sorted(refused.value.positions) == [1 << 20 | i for i in range(3)]
    assert all("refused by Cassandra" in r and "Key length" in r for r in refused.value.positions.values())
    assert stored_count(session, good, start) == 5 and stored_count(session, big, start) == 2000


def test_a_scan_out_of_time_returns_what_it_found_and_a_cursor_that_misses_and_repeats_nothing(stack, session):
    event_type = f"raw.{uuid.uuid4().hex[:8]}"
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    rng = random.Random(4)
    events = [
        Event(f"s{i:03d}", event_type, now - timedelta(hours=rng.randrange(72), seconds=rng.randrange(3600)), "web")
        for i in range(200)
    ]
    raw_writer.RawEventWriter(session, stack).write(
        RawBatch.of([(i, e, encode_event(e)) for i, e in enumerate(events)]), shard=0
    )
    reader = raw_reader.RawEventReader(session, shards=1)
    q = raw_reader.RawQuery([event_type], now - timedelta(days=31), now + timedelta(minutes=1), limit=1000)
    seen, pages = [], 0
    while True:
        bodies, cursor = reader.page(q, deadline=0.0)  # always out of time: one slot or hour per page
        seen += [msgspec.json.decode(b)["event_id"] for b in bodies]
        pages += 1
        if cursor is None:
            break
        q.cursor = cursor
    want = [e.event_id for e in sorted(events, key=lambda e: (-raw_events.us(e.timestamp), e.event_id))]
    assert seen == want and pages > 100  # each page ended early, and the next went on from there

    # A filter nothing matches stops at the deadline too, with a cursor, instead of scanning 31 days.
    q = raw_reader.RawQuery([event_type], now - timedelta(days=31), now + timedelta(minutes=1), source="nobody")
    bodies, cursor = reader.page(q, deadline=0.0)
    assert bodies == [] and cursor is not None and cursor.ts_us >= raw_events.us(now - timedelta(hours=2))


def test_a_write_cassandra_refuses_whole_is_an_error_to_wait_out_not_a_refusal_of_events(stack, session):
    # Every row refused says more about a setting or the table than about the events (here a TTL
    # Cassandra cannot take): nothing is reported for dead-lettering, the error goes up.
    from cassandra import InvalidRequest

    start = datetime(2026, 3, 4, 5, 6, 8, tzinfo=UTC)
    events = [Event(f"all-{i}", f"raw.ttl.{i % 2}", start, "web") for i in range(6)]
    raw = RawBatch.of([(i, e, encode_event(e)) for i, e in enumerate(events)])
    with pytest.raises(InvalidRequest):
        raw_writer.RawEventWriter(session, stack.model_copy(update={"raw_ttl_s": -1})).write(raw, shard=0)


def test_sparse_types_share_a_row_per_window_and_read_back_in_order_beside_busy_seconds(stack, session):
    # One flush holds a sparse type (2 events a second over 25 s: 3 windows) and a busy one (100 a
    # second); a second flush adds a busy burst inside one of the sparse type's windows, so that
    # window holds a wide row and narrow rows, which the reader must interleave by time.
    sparse, busy = f"raw.sparse.{uuid.uuid4().hex[:6]}", f"raw.busy.{uuid.uuid4().hex[:6]}"
    start = datetime.now(UTC).replace(minute=30, second=0, microsecond=0)
    rng = random.Random(5)

    def events(event_type: str, n: int, first: int, seconds: int, tag: str) -> list[Event]:
        return [
            Event(
                f"{tag}{i:04d}",
                event_type,
                start + timedelta(seconds=first, microseconds=rng.randrange(seconds * 10**6)),
            )
            for i in range(n)
        ]

    first_flush = events(sparse, 50, 0, 25, "a") + events(busy, 300, 0, 3, "b")
    second_flush = events(sparse, 400, 12, 2, "c")  # 200 a second: narrow rows in the window 10-19
    writer = raw_writer.RawEventWriter(session, stack)
    for k, flush in enumerate((first_flush, second_flush)):
        writer.write(RawBatch.of([(k << 20 | i, e, encode_event(e)) for i, e in enumerate(flush)]), shard=0)

    hour = start.replace(minute=0)
    slots = {  # ms after `start`
        et: sorted(
            {
                round((r.slot.replace(tzinfo=UTC) - start).total_seconds() * 1000)
                for r in session.execute(
                    "select slot from event_chunks where event_type = %s and hour = %s and shard = 0", (et, hour)
                )
            }
        )
        for et in (sparse, busy)
    }
    assert slots[busy] == [0, 1000, 2000]  # a row per second
    # A wide row per window, at its end less 1 ms; the burst's seconds narrow.
    assert slots[sparse] == [9999, 12000, 13000, 19999, 29999]

    everything = first_flush + second_flush
    reader = raw_reader.RawEventReader(session, shards=1)
    for deadline in (None, 0.0):  # whole pages, and pages cut at every slot
        q = raw_reader.RawQuery([sparse, busy], start, start + timedelta(minutes=1), limit=37)
        seen = []
        while True:
            bodies, cursor = reader.page(q, deadline=deadline)
            seen += [msgspec.json.decode(b)["event_id"] for b in bodies]
            if cursor is None:
                break
            q.cursor = cursor
        want = [e.event_id for e in sorted(everything, key=lambda e: (-raw_events.us(e.timestamp), e.event_id))]
        assert seen == want

    # A range inside a window: only its events, though its wide row holds more.
    q = raw_reader.RawQuery([sparse], start + timedelta(seconds=21), start + timedelta(seconds=24), limit=1000)
    bodies, cursor = reader.page(q)
    inside = [e for e in everything if e.event_type == sparse and 21 <= (e.timestamp - start).total_seconds() < 24]
    assert cursor is None and sorted(msgspec.json.decode(b)["event_id"] for b in bodies) == sorted(
        e.event_id for e in inside
    )
