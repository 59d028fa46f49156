"""Minute and hour rollups: the accumulators and the per-partition aggregator, in plain Python.

The dataflow (dataflows/), the backfill and the tests all aggregate through this module, so the
engine that drives it stays replaceable. Nothing here does I/O.

Rollups are kept per Kafka partition: each partition's rows are complete on their own, so a
partition can overwrite its rows (never increment) and commit its Kafka offset in the same
transaction. Queries add the partitions up (counts and sums add; min/max combine; sketches merge).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import reduce
from itertools import repeat
from operator import add

from tally.events.schema import Event
from tally.sketch import Hll, hash_user

BUCKET_S = 60
HOUR_S = 3600


@dataclass(slots=True)
class Acc:
    """One (minute, event_type, source) cell of one partition."""

    count: int = 0
    value_count: int = 0
    value_sum: float = 0.0
    value_min: float | None = None
    value_max: float | None = None
    users: Hll = field(default_factory=Hll)

    def add(self, value: float | None, user_id: str | None) -> None:
        self.count += 1
        if value is not None:
            self.value_count += 1
            self.value_sum += value
            if self.value_min is None or value < self.value_min:
                self.value_min = value
            if self.value_max is None or value > self.value_max:
                self.value_max = value
        if user_id is not None:
            self.users.add_hashes((hash_user(user_id),))

    def fold(self, count: int, values: list[float], user_hashes: list[int]) -> None:
        """Fold many events of this cell at once, reduced to their count, their values and their
        users' hashes: one sketch update per batch, not per event.

        Values are added one at a time in stream order, not summed per batch first: float addition
        is not associative, and this way the sum depends only on the events and their order, not on
        where Kafka batches happened to be cut, so a replay writes the very same number."""
        self.count += count
        if values:
            self.value_count += len(values)
            self.value_sum = reduce(add, values, self.value_sum)
            lo, hi = min(values), max(values)
            if self.value_min is None or lo < self.value_min:
                self.value_min = lo
            if self.value_max is None or hi > self.value_max:
                self.value_max = hi
        if user_hashes:
            self.users.add_hashes(user_hashes)

    def merge(self, other: Acc) -> None:
        self.count += other.count
        self.value_count += other.value_count
        self.value_sum += other.value_sum
        if other.value_min is not None and (self.value_min is None or other.value_min < self.value_min):
            self.value_min = other.value_min
        if other.value_max is not None and (self.value_max is None or other.value_max > self.value_max):
            self.value_max = other.value_max
        self.users.merge(other.users)


Key = tuple[int, str, str]  # (bucket start, epoch seconds; event_type; source)


@dataclass(slots=True)
class RollupRow:
    """What is written to the rollup table for one cell of one partition."""

    bucket: int
    event_type: str
    source: str
    partition: int
    acc: Acc
    final: bool
    width: int = BUCKET_S  # 60: a minute row; 3600: an hour row (the sum of its minutes)

    @property
    def bucket_time(self) -> datetime:
        return datetime.fromtimestamp(self.bucket, UTC)


# A Kafka message holds up to 2**LINE_BITS events (NDJSON); an event's position in the stream is
# offset << LINE_BITS | line: unique, ordered, and the same every time the message is read again.
LINE_BITS = 10


def position(offset: int, line: int) -> int:
    return offset << LINE_BITS | line


def seconds_of(events: list[Event]) -> list[int]:
    """Event time in whole epoch seconds (floor), computed once per event for rollups and raw chunks."""
    return [int(e.timestamp.timestamp() // 1) for e in events]


class RawBatch:
    """Valid events as raw storage writes them: grouped by (event_type, second of event time), each
    group holding its stream positions and JSON lines in stream order. Grouping happens in the
    dataflow's one pass over a batch, so the writer does no work per event."""

    __slots__ = ("chunks", "count")

    def __init__(self) -> None:
        self.chunks: dict[tuple[str, int], tuple[list[int], list[bytes]]] = {}
        self.count = 0

    def __len__(self) -> int:
        return self.count

    def add(self, events: list[Event], seconds: list[int], positions: list[int], lines: list[bytes]) -> None:
        chunks = self.chunks
        for event, second, pos, line in zip(events, seconds, positions, lines, strict=True):
            key = (event.event_type, second)
            chunk = chunks.get(key)
            if chunk is None:
                chunks[key] = ([pos], [line])
            else:
                chunk[0].append(pos)
                chunk[1].append(line)
        self.count += len(events)

    def items(self) -> list[tuple[int, bytes]]:
        """Every (position, JSON line), in stream order."""
        pairs = (pair for positions, lines in self.chunks.values() for pair in zip(positions, lines, strict=True))
        return sorted(pairs)

    @classmethod
    def of(cls, raw: list[tuple[int, Event, bytes]]) -> RawBatch:
        """From (position, event, line) triples, in the order given."""
        batch = cls()
        events = [e for _p, e, _v in raw]
        batch.add(events, seconds_of(events), [p for p, _e, _v in raw], [v for _p, _e, v in raw])
        return batch


@dataclass
class Flush:
    """Everything one partition must make durable, in order, before committing `next_offset`."""

    partition: int
    next_offset: int
    watermark: int | None
    rows: list[RollupRow]
    raw: RawBatch  # every valid event, late ones included: raw storage keeps all of them
    late: list[Event]
    invalid: list[tuple[int, bytes, str]]  # (position, line, reason) for the dead-letter topic
    # Stream position of each late event (parallel to `late`; empty when the caller gave none): the
    # correction step tells a late event's own raw copy from an earlier one by it.
    late_positions: list[int] = field(default_factory=list)


def bucket_of(ts: float) -> int:
    t = int(ts // 1)
    return t - t % BUCKET_S


def hour_of(t: int) -> int:
    """The start of the hour holding epoch second (or minute) `t`."""
    return t - t % HOUR_S


class PartitionAggregator:
    """Open minute buckets of one Kafka partition, closed by an event-time watermark.

    The watermark is the largest event time seen, so a backlog replayed after a stall does not
    make in-bound events late (the clock is the data, not the wall). A bucket closes once the
    watermark is `allowed_lateness_s` past its end; its final row is written and it is evicted.
    An event for a closed bucket is late: it goes to the late stream, never silently dropped.
    Event times far ahead of their arrival never get here (dataflows.aggregate refuses them), so
    every open bucket closes as the stream moves on.

    Each minute, when it closes, is merged into its hour, in minute order: an hour row is exactly
    the sum of its minute rows, the same after a restart (which rebuilds the open hour from the
    final minute rows, in the same order) and long ranges are answered from 60x fewer rows. An
    hour row is written once, when the hour closes: until then queries read its minutes.
    """

    def __init__(self, partition: int, allowed_lateness_s: int, watermark: int | None = None):
        self.partition = partition
        self.allowed_lateness_s = allowed_lateness_s
        self.watermark = watermark
        self.open: dict[Key, Acc] = {}
        self.dirty: set[Key] = set()
        self.hours: dict[Key, Acc] = {}  # the closed minutes of each open hour, merged
        self.late: list[Event] = []
        self.late_positions: list[int] = []

    def restore(self, key: Key, acc: Acc, width: int = BUCKET_S) -> None:
        (self.open if width == BUCKET_S else self.hours)[key] = acc

    def advance_idle(self, wall_s: int, lag_s: int) -> bool:
        """The partition has nothing left to read: let the watermark follow the wall clock, lag_s
        behind. Only ever forward, and only when caught up, so a backlog never makes its own
        events late. Returns whether the watermark moved."""
        target = wall_s - lag_s
        if self.watermark is not None and target <= self.watermark:
            return False
        self.watermark = target
        return True

    def is_closed(self, bucket: int, width: int = BUCKET_S) -> bool:
        return self.watermark is not None and bucket + width + self.allowed_lateness_s <= self.watermark

    def add(self, events: list[Event], seconds: list[int] | None = None, positions: list[int] | None = None) -> None:
        # Lateness is judged against the watermark as of the start of the batch, so the order of
        # events inside one Kafka batch never changes the outcome.
        high = self.watermark
        # Closed buckets are those ending (with lateness) at or before this limit.
        limit = None if high is None else high - self.allowed_lateness_s - BUCKET_S
        cells: dict[Key, list[Event]] = {}
        late, late_positions = self.late, self.late_positions
        secs = seconds_of(events) if seconds is None else seconds
        for e, t, pos in zip(events, secs, repeat(-1) if positions is None else positions, strict=False):
            bucket = t - t % BUCKET_S
            if limit is not None and bucket <= limit:
                late.append(e)
                if pos >= 0:
                    late_positions.append(pos)
                continue
            key = (bucket, e.event_type, e.source)
            cell = cells.get(key)
            if cell is None:
                cells[key] = [e]
            else:
                cell.append(e)
            if high is None or t > high:
                high = t
        opened = self.open
        for key, evs in cells.items():
            acc = opened.get(key)
            if acc is None:
                acc = opened[key] = Acc()
            acc.fold(
                len(evs),
                [e.value for e in evs if e.value is not None],
                [hash_user(e.user_id) for e in evs if e.user_id is not None],
            )
        self.dirty.update(cells)
        self.watermark = high

    def flush(
        self, next_offset: int, raw: RawBatch | None = None, invalid: list[tuple[int, bytes, str]] | None = None
    ) -> Flush:
        """Minute rows changed since the last flush, hour rows that closed (closed cells are
        final and evicted), and the late events, with the raw events and invalid messages the
        caller collected since the last flush."""
        rows = []
        p, dirty = self.partition, self.dirty
        closed = sorted(k for k in self.open if self.is_closed(k[0]))
        for key in dirty.difference(closed):
            rows.append(RollupRow(key[0], key[1], key[2], p, self.open[key], False))
        dirty.clear()
        for key in closed:  # in minute order, so an hour's sum never depends on how flushes fell
            acc = self.open.pop(key)
            rows.append(RollupRow(key[0], key[1], key[2], p, acc, True))
            hour_key = (hour_of(key[0]), key[1], key[2])
            hour = self.hours.get(hour_key)
            if hour is None:
                hour = self.hours[hour_key] = Acc()
            hour.merge(acc)
        for key in [k for k in self.hours if self.is_closed(k[0], HOUR_S)]:
            rows.append(RollupRow(key[0], key[1], key[2], p, self.hours.pop(key), True, HOUR_S))
        out = Flush(
            self.partition,
            next_offset,
            self.watermark,
            rows,
            raw or RawBatch(),
            self.late,
            invalid or [],
            self.late_positions,
        )
        self.late, self.late_positions = [], []
        return out
