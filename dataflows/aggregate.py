"""The stateful step: decode a Kafka batch, fold it into the partition's open buckets, flush on time."""

from __future__ import annotations

import time
from bisect import bisect_left
from dataclasses import dataclass, field
from pathlib import Path

from bytewax.operators import StatefulLogic

from dataflows import metrics
from dataflows.kafka_source import KafkaBatch
from tally.dedup import SeenIds
from tally.events.schema import decode_messages
from tally.rollup import Flush, PartitionAggregator, RawBatch, position, seconds_of


@dataclass
class PartitionState:
    agg: PartitionAggregator
    seen: SeenIds | None = None
    last_flush: float = field(default_factory=time.monotonic)
    invalid: list[tuple[int, bytes, str]] = field(default_factory=list)
    raw: RawBatch = field(default_factory=RawBatch)
    next_offset: int = 0
    pending: bool = False  # something changed since the last flush
    # After a restart: where the flushes cut before the stop ended, past the committed offset
    # (tally.dedup). Flushes are cut there again, and messages read beyond the next end wait.
    replay_ends: list[int] = field(default_factory=list)
    carry: KafkaBatch | None = None


class Aggregate:
    """The per-partition step, as a pure function of (state, batch): run by `AggregateLogic` in the
    flow, called directly with a fake clock in tests."""

    def __init__(
        self,
        allowed_lateness_s: int,
        flush_interval_s: float,
        clock=time.monotonic,
        max_ahead_s: int | None = None,
        idle_lag_s: int | None = None,
        wall_clock=time.time,
        dedup: tuple[Path, int] | None = None,
    ):
        self.allowed_lateness_s = allowed_lateness_s
        self.flush_interval_s = flush_interval_s
        self.clock = clock
        self.max_ahead_s = max_ahead_s
        self.idle_lag_s = idle_lag_s  # None: watermarks move with events only
        self.wall_clock = wall_clock
        self.dedup = dedup  # (directory of the per-partition stores, horizon in seconds); None: off

    def __call__(self, state: PartitionState | None, batch: KafkaBatch) -> tuple[PartitionState, Flush | None]:
        if state is None:
            restore = batch.restore
            watermark = restore.watermark if restore else None
            agg = PartitionAggregator(
                batch.partition, self.allowed_lateness_s, watermark, self.max_ahead_s, self.wall_clock
            )
            if restore:
                for (width, key), acc in restore.cells.items():
                    agg.restore(key, acc, width)
            seen = None
            if self.dedup:
                fresh = restore is not None and restore.fresh
                seen = SeenIds(self.dedup[0] / f"p{batch.partition}", self.dedup[1], fresh)
            state = PartitionState(agg, seen, last_flush=self.clock())
            if seen is not None and restore is not None and restore.offset is not None:
                state.replay_ends = seen.flush_ends(restore.offset)
        if state.carry is not None:
            batch = _joined(state.carry, batch)
            state.carry = None
        end = state.replay_ends[0] if state.replay_ends else None
        if end is not None and batch.offsets and batch.offsets[-1] >= end:
            cut = bisect_left(batch.offsets, end)
            state.carry = KafkaBatch(batch.partition, batch.values[cut:], batch.offsets[cut:], batch.next_offset)
            batch = KafkaBatch(batch.partition, batch.values[:cut], batch.offsets[:cut], end)
        if batch.values:
            # Each message is NDJSON of one or more events (tally.producer): one decode for all.
            lines: list[bytes] = []
            positions: list[int] = []
            for offset, value in zip(batch.offsets, batch.values, strict=True):
                for j, line in enumerate(value.split(b"\n")):
                    lines.append(line)
                    positions.append(position(offset, j))
            events, errors = decode_messages(lines)
            bad = set()
            for e in errors:
                reason = f"{e.field}: {e.message}" if e.field else e.message
                state.invalid.append((positions[e.index], lines[e.index], reason))
                bad.add(e.index)
            if bad:
                good = [i for i in range(len(lines)) if i not in bad]
                lines, positions = [lines[i] for i in good], [positions[i] for i in good]
            if state.seen is not None:
                first = state.seen.first_copies([e.event_id for e in events], positions)
                if not all(first):
                    metrics.DUPLICATES.labels(str(batch.partition)).inc(first.count(False))
                    events = [e for e, f in zip(events, first, strict=True) if f]
                    lines = [v for v, f in zip(lines, first, strict=True) if f]
                    positions = [p for p, f in zip(positions, first, strict=True) if f]
            seconds = seconds_of(events)
            state.raw.add(events, seconds, positions, lines)
            state.agg.add(events, seconds, positions)
            state.pending = True
        elif batch.caught_up and self.idle_lag_s is not None:
            # Persisting the moved watermark is what makes buckets final for queries.
            state.pending |= state.agg.advance_idle(int(self.wall_clock()), self.idle_lag_s)
        state.next_offset = batch.next_offset
        now = self.clock()
        if end is not None:
            if state.next_offset < end:
                return state, None  # the interrupted flush is not complete yet
            state.replay_ends.pop(0)
        else:
            if now - state.last_flush < self.flush_interval_s:
                return state, None
            closing = any(state.agg.is_closed(k[0]) for k in state.agg.open)
            if not state.pending and not closing:
                return state, None
        if state.seen is not None:
            # Before the sink writes anything of this flush: the ids it counts, and where it ends.
            state.seen.commit(state.agg.watermark, state.next_offset)
        flush = state.agg.flush(state.next_offset, state.raw, state.invalid)
        metrics.OPEN_CELLS.labels(str(batch.partition)).set(len(state.agg.open) + len(state.agg.hours))
        state.invalid = []
        state.raw = RawBatch()
        state.pending = False
        state.last_flush = now
        return state, flush


def _joined(first: KafkaBatch, then: KafkaBatch) -> KafkaBatch:
    return KafkaBatch(
        first.partition,
        first.values + then.values,
        first.offsets + then.offsets,
        then.next_offset,
        caught_up=then.caught_up,
    )


class AggregateLogic(StatefulLogic[KafkaBatch, Flush, None]):
    """Runs `Aggregate` for one partition inside Bytewax's `op.stateful`.

    `op.stateful_map` deep-copies its state whenever Bytewax takes a snapshot (every epoch), which
    with thousands of open cells cost more than the aggregation itself (seen with py-spy). Nothing
    here needs Bytewax snapshots: offsets and open cells are committed to PostgreSQL with every
    flush and read back by the source on restart, so the snapshot is empty.
    """

    def __init__(self, aggregate: Aggregate):
        self.aggregate = aggregate
        self.state: PartitionState | None = None

    def on_item(self, value: KafkaBatch) -> tuple[list[Flush], bool]:
        self.state, flush = self.aggregate(self.state, value)
        return ([flush] if flush is not None else []), StatefulLogic.RETAIN

    def snapshot(self) -> None:
        return None
