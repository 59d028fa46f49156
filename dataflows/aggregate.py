"""The stateful step: take a Kafka batch into the partition's open buckets, and flush on time.

For each batch, in order: restore the partition (first batch only), cut the batch where a flush
ended before a crash, take its events in (split, decode, quarantine what no store may hold,
drop copies, aggregate), and decide whether a flush is due. Everything refused on the way goes
to the flush's dead-letter list with its position and reason: nothing is dropped silently.

While a partition drains a backlog, most flushes do not commit: they carry raw events and dead
letters, and dedup remembers where they end; rollup rows and the offset are committed every
`commit_interval` seconds, so an open cell is written once per commit, not once per flush. A
restart resumes at the last commit and replays the flushes after it, cut at the same ends: raw
rows are rewritten identically, dedup keeps the ids it meets at their own positions again, and
the cells are re-aggregated from the state committed with that offset.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from dataclasses import dataclass, field
from itertools import compress, repeat
from operator import attrgetter
from pathlib import Path

from bytewax.operators import StatefulLogic

from dataflows import metrics
from dataflows.kafka_source import KafkaBatch
from tally.aggregator import PartitionAggregator
from tally.dedup import FILTER_BUDGET, SeenIds
from tally.events.decode import decode_messages
from tally.events.schema import Event
from tally.flush import LINE_BITS, Flush, RawBatch, position, seconds_of

MAX_LINES = 1 << LINE_BITS  # events a message can hold and still give each a distinct position
# Flushes between two commits at most: dedup keeps the ends of the last 16 (tally.dedup), and a
# replay must find every end after the committed offset to cut its flushes there again.
MAX_PARTIALS = 8


@dataclass
class PartitionState:
    agg: PartitionAggregator
    seen: SeenIds | None = None
    last_flush: float = field(default_factory=time.monotonic)
    invalid: list[tuple[int, bytes, str]] = field(default_factory=list)
    raw: RawBatch = field(default_factory=RawBatch)
    next_offset: int = 0
    lag: int = 0  # messages the partition had left to read after the last batch
    pending: bool = False  # something changed since the last flush
    # After a restart: where the flushes cut before the stop ended, past the committed offset
    # (tally.dedup). Flushes are cut there again, and messages read beyond the next end wait.
    replay_ends: list[int] = field(default_factory=list)
    carry: KafkaBatch | None = None
    # Positions a store refused before the restart (dataflows.commit_sink): dead-lettered on sight.
    refused: dict[int, str] = field(default_factory=dict)
    committed: bool = False  # an offset of this partition is in PostgreSQL (restored or written)
    last_commit: float = field(default_factory=time.monotonic)
    partials: int = 0  # flushes since the last commit
    # Every flush commits up to this offset (the one ending there too): PostgreSQL refused a commit
    # whose rows held events of earlier flushes, which the sink can then not name (dataflows.commit_sink).
    whole_until: int = 0


@dataclass
class Lines:
    """The events of a batch on their way in, as parallel lists; `keep` filters them all at once."""

    lines: list[bytes]
    positions: list[int]
    ceilings: list[int]  # latest acceptable event time of each: its message's arrival + max_ahead_s
    events: list[Event] = field(default_factory=list)
    seconds: list[int] = field(default_factory=list)

    def keep(self, flags: list[bool]) -> None:
        self.lines = list(compress(self.lines, flags))
        self.positions = list(compress(self.positions, flags))
        self.ceilings = list(compress(self.ceilings, flags))
        if self.events:
            self.events = list(compress(self.events, flags))
            self.seconds = list(compress(self.seconds, flags))


class Aggregate:
    """The per-partition step, as a pure function of (state, batch): run by `AggregateLogic` in the
    flow, called directly with a fake clock in tests."""

    def __init__(
        self,
        allowed_lateness_s: int,
        flush_interval_s: float,
        clock=time.monotonic,
        max_ahead_s: int = 300,
        idle_lag_s: int | None = None,
        wall_clock=time.time,
        dedup: tuple[Path, int] | None = None,
        backlog: tuple[int, float] | None = None,
        max_events: int | None = None,
        commit_interval: float | None = None,
        dedup_filter_bytes: int = FILTER_BUDGET,
    ):
        self.allowed_lateness_s = allowed_lateness_s
        self.flush_interval_s = flush_interval_s
        self.clock = clock
        self.max_ahead_s = max_ahead_s
        self.idle_lag_s = idle_lag_s  # None: watermarks move with events only
        self.wall_clock = wall_clock
        self.dedup = dedup  # (directory of the per-partition stores, horizon in seconds); None: off
        self.dedup_filter_bytes = dedup_filter_bytes
        # (messages left to read from which a partition is draining a backlog, its flush interval);
        # None: flush_interval_s always
        self.backlog = backlog
        self.max_events = max_events  # a flush once a partition holds this many events; None: no bound
        # Seconds between commits while draining a backlog (see the module's doc); None: every
        # flush commits. Needs dedup, whose flush ends make the replay cut flushes where they fell.
        self.commit_interval = commit_interval if dedup and backlog else None

    def __call__(self, state: PartitionState | None, batch: KafkaBatch) -> tuple[PartitionState, Flush | None]:
        if state is None:
            state = self._restored(batch)
        batch, replay_end = _cut_at_replay_end(state, batch)
        if batch.values:
            self._take(state, batch)
        elif batch.caught_up and self.idle_lag_s is not None:
            # Persisting the moved watermark is what makes buckets final for queries.
            state.pending |= state.agg.advance_idle(int(self.wall_clock()), self.idle_lag_s)
        state.next_offset = batch.next_offset
        state.lag = batch.lag
        if not self._flush_due(state, replay_end):
            return state, None
        return state, self._flush(state, batch.partition)

    def _restored(self, batch: KafkaBatch) -> PartitionState:
        """The partition as last committed: watermark, open cells, ids seen, where flushes ended."""
        restore = batch.restore
        agg = PartitionAggregator(batch.partition, self.allowed_lateness_s, restore.watermark if restore else None)
        if restore:
            for (width, key), acc in restore.cells.items():
                agg.restore(key, acc, width)
        seen = None
        if self.dedup:
            fresh = restore is not None and restore.fresh
            seen = SeenIds(self.dedup[0] / f"p{batch.partition}", self.dedup[1], fresh, self.dedup_filter_bytes)
        state = PartitionState(agg, seen, last_flush=self.clock(), refused=dict(restore.refused) if restore else {})
        state.last_commit = state.last_flush
        if restore is not None:
            state.committed = not restore.fresh
            state.whole_until = restore.whole_until
        if seen is not None and restore is not None and restore.offset is not None:
            state.replay_ends = seen.flush_ends(restore.offset)
        return state

    def _take(self, state: PartitionState, batch: KafkaBatch) -> None:
        taken = self._split(state, batch)
        self._decode(state, taken)
        self._refuse_far_ahead(state, taken)
        self._drop_copies(state, batch.partition, taken)
        state.raw.add(taken.events, taken.seconds, taken.positions, taken.lines)
        state.agg.add(taken.events, taken.seconds, taken.positions)
        state.pending = True

    def _split(self, state: PartitionState, batch: KafkaBatch) -> Lines:
        """Each message is NDJSON of one or more events (tally.producer): one line list for the
        batch, each line with its position and the latest event time its arrival allows."""
        taken = Lines([], [], [])
        wall_ms = int(self.wall_clock() * 1000)
        arrivals = batch.arrivals if len(batch.arrivals) == len(batch.values) else repeat(wall_ms)
        for offset, value, arrived_ms in zip(batch.offsets, batch.values, arrivals, strict=False):
            if value is None:  # a tombstone: no producer of events writes one
                state.invalid.append((position(offset, 0), b"", _TOMBSTONE))
                continue
            lines = value.split(b"\n")
            if len(lines) > MAX_LINES:  # not written by the API (tally.producer): refused whole
                state.invalid.append((position(offset, 0), value, _TOO_MANY))
                continue
            taken.lines += lines
            first = position(offset, 0)
            taken.positions += range(first, first + len(lines))
            ceiling = (arrived_ms if arrived_ms > 0 else wall_ms) // 1000 + self.max_ahead_s
            taken.ceilings += repeat(ceiling, len(lines))
        if state.refused and taken.positions:
            self._dead_letter_refused(state, taken)
        return taken

    @staticmethod
    def _dead_letter_refused(state: PartitionState, taken: Lines) -> None:
        """Dead-letter the positions a store refused before the restart, as they come by again."""
        low, high = taken.positions[0], taken.positions[-1]
        for pos in [p for p in state.refused if p < low]:  # gone for good (retention): forget them
            del state.refused[pos]
        if not any(low <= p <= high for p in state.refused):
            return
        flags = [p not in state.refused for p in taken.positions]
        for line, pos, keep in zip(taken.lines, taken.positions, flags, strict=True):
            if not keep:
                state.invalid.append((pos, line, state.refused.pop(pos)))
        taken.keep(flags)

    @staticmethod
    def _decode(state: PartitionState, taken: Lines) -> None:
        """The same schema as the API's; a line it refuses is dead-lettered with the reason."""
        events, errors = decode_messages(taken.lines)
        if errors:
            flags = [True] * len(taken.lines)
            for e in errors:
                state.invalid.append((taken.positions[e.index], taken.lines[e.index], e.reason))
                flags[e.index] = False
            taken.keep(flags)
        taken.events = events
        taken.seconds = seconds_of(events)

    def _refuse_far_ahead(self, state: PartitionState, taken: Lines) -> None:
        """An event stamped further ahead of its arrival than max_ahead_s would hold its bucket open
        and outlive dedup; the API refuses those, so only another producer's can be here. Judged
        by the message's Kafka timestamp, so a replay decides the same way."""
        if not taken.seconds or max(taken.seconds) <= min(taken.ceilings):
            return
        flags = [t <= c for t, c in zip(taken.seconds, taken.ceilings, strict=True)]
        if all(flags):
            return
        reason = f"timestamp: more than {self.max_ahead_s} s ahead of its arrival in Kafka"
        for ok, line, pos in zip(flags, taken.lines, taken.positions, strict=True):
            if not ok:
                state.invalid.append((pos, line, reason))
        taken.keep(flags)

    @staticmethod
    def _drop_copies(state: PartitionState, partition: int, taken: Lines) -> None:
        if state.seen is None or not taken.events:
            return
        first = state.seen.first_copies(list(map(_event_id, taken.events)), taken.positions)
        if not all(first):
            metrics.DUPLICATES.labels(str(partition)).inc(first.count(False))
            taken.keep(first)

    def _flush_due(self, state: PartitionState, replay_end: int | None) -> bool:
        if replay_end is not None:
            if state.next_offset < replay_end:
                return False  # the interrupted flush is not complete yet
            state.replay_ends.pop(0)
            return True
        if self.max_events is not None and len(state.raw) >= self.max_events:
            return True
        if self.clock() - state.last_flush < self._interval(state):
            return False
        if state.pending:
            return True
        # Nothing new: due only to commit what earlier flushes left uncommitted, or cells that closed.
        return bool(state.partials or any(state.agg.is_closed(k[0]) for k in state.agg.open)) and self._commits(state)

    def _interval(self, state: PartitionState) -> float:
        if self.backlog is not None and state.lag >= self.backlog[0]:
            return self.backlog[1]
        return self.flush_interval_s

    def _commits(self, state: PartitionState) -> bool:
        """Whether this flush commits rows and offset, or only writes raw events between commits."""
        if self.commit_interval is None or not state.committed or state.next_offset <= state.whole_until:
            return True
        if state.lag < self.backlog[0] or state.partials >= MAX_PARTIALS:
            return True
        if self.max_events is not None and len(state.agg.late) >= self.max_events:
            return True  # late events wait for the commit in memory: bounded like raw events
        return self.clock() - state.last_commit >= self.commit_interval

    def _flush(self, state: PartitionState, partition: int) -> Flush:
        if state.seen is not None:
            # Before the sink writes anything of this flush: the ids it counts, and where it ends.
            state.seen.commit(state.agg.watermark, state.next_offset)
        now = self.clock()
        if self._commits(state):
            flush = state.agg.flush(state.next_offset, state.raw, state.invalid)
            flush.partials = state.partials
            state.committed, state.partials, state.last_commit = True, 0, now
            metrics.OPEN_CELLS.labels(str(partition)).set(len(state.agg.open) + len(state.agg.hours))
        else:
            watermark = state.agg.watermark
            flush = Flush(partition, state.next_offset, watermark, [], state.raw, [], state.invalid, commit=False)
            state.partials += 1
        state.invalid = []
        state.raw = RawBatch()
        state.pending = False
        state.last_flush = now
        return flush


_TOO_MANY = f"message: more than {MAX_LINES} events in one Kafka message"
_TOMBSTONE = "message: no value (a tombstone), not an event"
_event_id = attrgetter("event_id")


def _cut_at_replay_end(state: PartitionState, batch: KafkaBatch) -> tuple[KafkaBatch, int | None]:
    """After a restart, stop the batch where the next interrupted flush ended; the rest waits."""
    if state.carry is not None:
        batch = _joined(state.carry, batch)
        state.carry = None
    end = state.replay_ends[0] if state.replay_ends else None
    if end is not None and batch.offsets and batch.offsets[-1] >= end:
        cut = bisect_left(batch.offsets, end)
        state.carry = KafkaBatch(
            batch.partition, batch.values[cut:], batch.offsets[cut:], batch.next_offset, arrivals=batch.arrivals[cut:]
        )
        batch = KafkaBatch(batch.partition, batch.values[:cut], batch.offsets[:cut], end, arrivals=batch.arrivals[:cut])
    return batch, end


def _joined(first: KafkaBatch, then: KafkaBatch) -> KafkaBatch:
    return KafkaBatch(
        first.partition,
        first.values + then.values,
        first.offsets + then.offsets,
        then.next_offset,
        caught_up=then.caught_up,
        arrivals=first.arrivals + then.arrivals,
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
