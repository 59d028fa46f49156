"""The per-partition aggregator: open minute cells closed by an event-time watermark, in plain Python.

The dataflow (dataflows/) aggregates through this module, as will the backfill, so the engine that
drives it stays replaceable. Nothing here does I/O.
"""

from __future__ import annotations

from itertools import repeat

from tally.cells import BUCKET_S, HOUR_S, Acc, Key, RollupRow, hour_of
from tally.events.schema import Event
from tally.flush import LINE_BITS, Flush, RawBatch, seconds_of
from tally.sketch import hash_user


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
        """Fold events into their open cells; those of closed buckets go to the late list.

        Lateness is judged against the watermark as of the start of each Kafka message (or of the
        whole call, without positions): the order of events inside a message never changes the
        outcome, and message boundaries, unlike batch boundaries, are the same whenever the stream
        is read again, so a replay judges every event as the first reading did."""
        high = self.watermark
        slack = self.allowed_lateness_s + BUCKET_S
        # Closed buckets are those ending (with lateness) at or before this limit.
        limit = None if high is None else high - slack
        next_message = 0  # the first position of the message after the current one
        cells: dict[Key, list[Event]] = {}
        late, late_positions = self.late, self.late_positions
        secs = seconds_of(events) if seconds is None else seconds
        for e, t, pos in zip(events, secs, repeat(-1) if positions is None else positions, strict=False):
            if pos >= next_message:  # one comparison an event: positions rise, a message at a time
                next_message = ((pos >> LINE_BITS) + 1) << LINE_BITS
                if high is not None:
                    limit = high - slack
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
