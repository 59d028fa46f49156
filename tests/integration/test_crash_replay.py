"""A flush killed after its raw write and read again in other batches leaves every event stored once."""

from __future__ import annotations

import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest

from dataflows.aggregate import Aggregate
from dataflows.commit_sink import CommitPartition, RefusedEvents
from dataflows.kafka_source import KafkaBatch, Restore
from tally.cells import Acc, RollupRow
from tally.events.schema import Event, encode_event
from tally.flush import Flush, RawBatch
from tally.storage import raw_events, raw_reader, raw_writer, rollup_store

T = datetime(2026, 5, 8, 9, 30, 7, tzinfo=UTC)
SHARD = 2


def test_a_replayed_flush_rewrites_the_same_raw_rows(stack, tmp_path):
    et = f"replay.{uuid.uuid4().hex[:8]}"
    # 500 events a message, all in one second: a flush of several messages is cut into pieces.
    values = [
        b"\n".join(encode_event(Event(f"{et}-{m}-{j}", et, T + timedelta(microseconds=j), "web")) for j in range(500))
        for m in range(20)
    ]
    cluster = raw_events.cluster(stack)
    session = cluster.connect(stack.cassandra_keyspace)
    writer = raw_writer.RawEventWriter(session, stack)
    clock = [0.0]
    dedup = (tmp_path / "dedup", 3600)

    def read(size: int, count: int, restore: Restore) -> list[int]:
        """Read `count` messages `size` at a time, writing each flush's raw events (never committing
        them, as if killed each time right after Cassandra's write)."""
        step, state, ends = Aggregate(120, 1.0, clock=lambda: clock[0], dedup=dedup), None, []
        for first in range(0, count + size, size):
            offsets = list(range(first, min(first + size, count)))
            clock[0] += 1.0  # a flush is due at every batch
            state, flush = step(
                state, KafkaBatch(0, values[first : first + len(offsets)], offsets, first + len(offsets), restore)
            )
            restore = None
            if flush is not None:
                writer.write(flush.raw, shard=SHARD)
                ends.append(flush.next_offset)
        state.seen.close()
        return ends

    try:
        assert read(3, 12, Restore(None, {})) == [6, 9, 12]  # 3,000 events in the first flush: two pieces
        assert read(5, 20, Restore(None, {}, offset=0)) == [6, 9, 12, 20]  # restarted at offset 0
        reader = raw_reader.RawEventReader(session, SHARD + 1)
        hour = raw_events.us(T.replace(minute=0, second=0))
        stored = Counter(e.event_id for e in reader.hour(et, hour))
    finally:
        cluster.shutdown()
    assert len(stored) == 20 * 500
    assert set(stored.values()) == {1}


def test_a_crash_between_commits_replays_to_exact_rollups_and_raw_events_once(stack, tmp_path):
    # A backlog drained with commits every 6 s and flushes every 2 s, killed after flushes that wrote
    # raw events but no rows, then resumed from what PostgreSQL holds, as the source resumes.
    run = uuid.uuid4().hex[:8]
    topic, et = f"replay-{run}", f"replay.{run}"
    t0 = T.replace(second=0)
    events = [
        Event(f"{et}-{i}", et, t0 + timedelta(seconds=i // 10 - 3 * (i % 7 == 0)), ("web", "app")[i % 2], None, i)
        for i in range(3000)  # 5 minutes of event time, some 3 s out of order
    ]
    values = [b"\n".join(encode_event(e) for e in events[m * 50 : m * 50 + 50]) for m in range(60)]
    cluster = raw_events.cluster(stack)
    session = cluster.connect(stack.cassandra_keyspace)
    writer = raw_writer.RawEventWriter(session, stack)
    clock = [0.0]
    dedup = (tmp_path / "dedup", 3600)

    def read(first: int, last: int, restore: Restore) -> list[bool]:
        """Messages first..last-1, two a batch, 2 s apart, lag counted to message 60; each flush's
        raw events written and committing flushes committed, as the sink does."""
        step = Aggregate(60, 1.0, clock=lambda: clock[0], dedup=dedup, backlog=(10, 2.0), commit_interval=6.0)
        state, kinds = None, []
        with rollup_store.connect(stack) as conn:
            # At the end of the partition, one more (empty) poll: caught up, the last flush commits.
            for i in range(first, last + (2 if last == len(values) else 0), 2):
                offsets = list(range(i, min(i + 2, last)))
                clock[0] += 2.0
                batch = KafkaBatch(0, values[i : i + len(offsets)], offsets, i + len(offsets), restore, lag=60 - i)
                state, flush = step(state, batch)
                restore = None
                if flush is not None:
                    writer.write(flush.raw, shard=SHARD)
                    if flush.commit:
                        rollup_store.write_flush(conn, topic, flush)
                    kinds.append(flush.commit)
        state.seen.close()
        return kinds

    try:
        with rollup_store.connect(stack, autocommit=True) as conn:
            rollup_store.apply_schema(conn)
            first_life = read(0, 44, Restore(None, {}, fresh=True, offset=0))
            assert first_life[-2:] == [False, False]  # killed with two flushes of raw events uncommitted
            offset, watermark, cells = rollup_store.load_partition(conn, topic, 0, 60)
            assert 0 < offset < 44
            assert read(offset, 60, Restore(watermark, cells, offset=offset))[-1] is True
            rows = conn.execute(
                "select bucket, source, event_count, value_sum from rollup_1m where event_type = %s"
                " and kafka_partition = 0",
                (et,),
            ).fetchall()
        reader = raw_reader.RawEventReader(session, SHARD + 1)
        stored = Counter(e.event_id for e in reader.hour(et, raw_events.us(t0.replace(minute=0))))
    finally:
        cluster.shutdown()
    truth: dict = {}
    for e in events:
        cell = truth.setdefault((e.timestamp.replace(second=0, microsecond=0), e.source), [0, 0.0])
        cell[0] += 1
        cell[1] += e.value
    assert {(b, s): [n, v] for b, s, n, v in rows} == truth
    assert len(stored) == len(events) and set(stored.values()) == {1}


def test_a_refused_commit_covering_earlier_flushes_makes_every_flush_commit_until_its_end(stack):
    # PostgreSQL refuses a commit whose rows hold events of flushes before it, whose raw events this
    # one does not carry: the sink cannot name them, so it records that every flush commits up to
    # the commit's end and restarts; the replay then meets the refusal in a flush that carries them.
    run = uuid.uuid4().hex[:8]
    settings = stack.model_copy(update={"events_topic": f"refuse-{run}"})
    constraint, source = f"refuse_{run}", f"{run}-refused"
    sink = CommitPartition(settings)
    row = RollupRow(int(T.timestamp()) // 60 * 60, f"refuse.{run}", source, 0, Acc(3), False)
    try:
        sink.write_batch([Flush(0, 10, None, [], RawBatch(), [], [])])  # an earlier commit: offset 10
        with rollup_store.connect(stack, autocommit=True) as conn:
            conn.execute(f"alter table rollup_1m add constraint {constraint} check (source <> '{source}') not valid")
            try:
                with pytest.raises(RefusedEvents):
                    sink.write_batch([Flush(0, 25, None, [row], RawBatch(), [], [], partials=2)])
            finally:
                conn.execute(f"alter table rollup_1m drop constraint if exists {constraint}")
            offset = conn.execute(
                "select next_offset from stream_offsets where topic = %s and kafka_partition = 0",
                (settings.events_topic,),
            ).fetchone()[0]
            assert (offset, rollup_store.whole_until(conn, settings.events_topic, 0)) == (10, 25)
    finally:
        sink.close()
