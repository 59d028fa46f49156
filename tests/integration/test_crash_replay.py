"""A flush killed after its raw write and read again in other batches leaves every event stored once."""

from __future__ import annotations

import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta

from dataflows.aggregate import Aggregate
from dataflows.kafka_source import KafkaBatch, Restore
from tally.events.schema import Event, encode_event
from tally.storage import raw_events, raw_reader, raw_writer

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
