"""The per-partition aggregator: open minute cells closed by an event-time watermark, in plain Python.

The dataflow (dataflows/) aggregates through this module, as will the backfill, so the engine that
drives it stays replaceable. Nothing here does I/O.
"""

from __future__ import annotations

from itertools import compress, repeat

from tally.cell_log import CellLog
from tally.cells import BUCKET_S, HOUR_S, Acc, Key, RollupRow, hour_of
from tally.events.schema import Event
from tally.flush import LINE_BITS, Flush, RawBatch, seconds_of

# The watermark before any event (None outside this module): lower than any event's time.
_BEFORE_TIME = -(1 << 62)


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
        self._log = CellLog()  # events taken since the last settle, not yet folded into their cells

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
        """Take events into their open cells; those of closed buckets go to the late list.

        Lateness is judged against the watermark as of the start of each Kafka message (or of the
        whole call, without positions): the order of events inside a message never changes the
        outcome, and message boundaries, unlike batch boundaries, are the same whenever the stream
        is read again, so a replay judges every event as the first reading did.

        Only the cell of each event is looked up here; its count, value and user are folded into
        the cell later, all cells at once (`settle`)."""
        # Locals, and a watermark "before time" instead of None: this loop runs once per event.
        high = _BEFORE_TIME if self.watermark is None else self.watermark
        slack, width = self.allowed_lateness_s + BUCKET_S, BUCKET_S
        limit = high - slack  # closed buckets are those ending (with lateness) at or before this
        next_message = 0  # the first position of the message after the current one
        log, opened = self._log, self.open
        get, accs = log.index.get, log.accs
        late, late_positions = self.late, self.late_positions
        late_before = len(late)
        ids: list[int] = []
        note = ids.append
        secs = seconds_of(events) if seconds is None else seconds
        for e, t, pos in zip(events, secs, repeat(-1) if positions is None else positions, strict=False):
            if pos >= next_message:  # one comparison an event: positions rise, a message at a time
                next_message = ((pos >> LINE_BITS) + 1) << LINE_BITS
                limit = high - slack
            bucket = t - t % width
            if bucket <= limit:
                late.append(e)
                if pos >= 0:
                    late_positions.append(pos)
                note(-1)
                continue
            key = (bucket, e.event_type, e.source)
            i = get(key)
            if i is None:
                acc = opened.get(key)
                if acc is None:
                    acc = opened[key] = Acc()
                i = log.index[key] = len(accs)
                accs.append(acc)
            note(i)
            if t > high:
                high = t
        high = None if high == _BEFORE_TIME else high
        self.watermark = high
        if len(late) > late_before:
            kept = [i >= 0 for i in ids]
            events, ids = list(compress(events, kept)), list(compress(ids, kept))
        if log.append(events, ids):
            self.settle()

    def settle(self) -> None:
        """Fold the events taken since the last settle into their cells (flush does it first)."""
        log = self._log
        if log.accs:
            log.fold_into_cells()
            self.dirty.update(log.index)
            self._log = CellLog()

    def flush(
        self, next_offset: int, raw: RawBatch | None = None, invalid: list[tuple[int, bytes, str]] | None = None
    ) -> Flush:
        """Minute rows changed since the last flush, hour rows that closed (closed cells are
        final and evicted), and the late events, with the raw events and invalid messages the
        caller collected since the last flush."""
        self.settle()
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
