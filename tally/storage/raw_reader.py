"""Reading raw events from Cassandra: newest first, filtered, a page at a time with a cursor."""

from __future__ import annotations

import base64
import heapq
import json
import time
from bisect import bisect_right
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from itertools import count
from operator import itemgetter

import msgspec
from cassandra.cluster import EXEC_PROFILE_DEFAULT
from cassandra.query import tuple_factory

from tally.events.schema import UNKNOWN_SOURCE, Event
from tally.storage.raw_events import HOUR_US, SLOT_US, from_us, slot_bounds, us

_events = msgspec.json.Decoder(list[Event])


class Counted(msgspec.Struct, gc=False):
    """What counting stored events needs of each: its identity and its source. Decoded without the
    ingest schema's limits, so an event stored before a limit existed is still counted."""

    event_id: str
    source: str = UNKNOWN_SOURCE  # stored without one: counted as the rollups count it


_counted = msgspec.json.Decoder(list[Counted])


@dataclass(frozen=True)
class Cursor:
    ts_us: int
    event_id: str

    def encode(self) -> str:
        return base64.urlsafe_b64encode(json.dumps([self.ts_us, self.event_id]).encode()).decode()

    @classmethod
    def decode(cls, text: str) -> Cursor:
        ts_us, event_id = json.loads(base64.urlsafe_b64decode(text.encode()))
        return cls(int(ts_us), str(event_id))


@dataclass
class RawQuery:
    event_types: list[str]
    start: datetime
    end: datetime  # exclusive
    source: str | None = None
    user_id: str | None = None
    attrs: dict[str, str] | None = None
    limit: int = 100
    cursor: Cursor | None = None


class RawEventReader:
    def __init__(self, session, shards: int):
        self.session = session
        self.shards = shards
        self.select = session.prepare(
            "select slot, events from event_chunks"
            " where event_type = ? and hour = ? and shard = ? and slot >= ? and slot <= ?"
        )
        self.select_at = session.prepare(
            "select slot, events from event_chunks where event_type = ? and hour = ? and shard = ? and slot = ?"
        )
        self._encode = msgspec.json.Encoder().encode
        # Rows as plain tuples: the driver's default builds a namedtuple class for every page it
        # receives, and a page of events asks up to 8 shards' slots at once (py-spy: a fifth of a
        # page request went to that).
        self.profile = session.execution_profile_clone_update(EXEC_PROFILE_DEFAULT, row_factory=tuple_factory)

    def page(self, q: RawQuery, deadline: float | None = None) -> tuple[list[bytes], Cursor | None]:
        """One page of matching events (JSON as ingested), newest first, and the next page's cursor.
        At `deadline` (time.monotonic) the scan stops at the last whole slot: the page may then be
        short, and its cursor goes on from there."""
        out: list[bytes] = []
        last = None
        for ts, event in self._matching(q, deadline):
            if event is None:  # out of time: everything at or after `ts` was looked at
                return out, Cursor(ts - 1, "")
            if len(out) == q.limit:
                return out, last
            out.append(self._encode(event))
            last = Cursor(ts, event.event_id)
        return out, None

    def _matching(self, q: RawQuery, deadline: float | None) -> Iterator[tuple[int, Event | None]]:
        start_us, end_us = us(q.start), us(q.end) - 1
        if q.cursor is not None:
            end_us = min(end_us, q.cursor.ts_us)
        if end_us < start_us:
            return
        out = _Ordered(q, start_us, end_us)
        # Rows asked of each stream (type and shard) a round trip: every row fetched is read and
        # decoded by the driver whether the page needs it or not, and each further round trip waits
        # on Cassandra. The page's events are shared among the streams; a page without filters
        # takes most of what it reads, a filtered one skips most of it.
        filtered = q.source is not None or q.user_id is not None or bool(q.attrs)
        share = -(-q.limit // (len(q.event_types) * self.shards))
        rows = min(1000, max(8, share * (8 if filtered else 2)))
        hour = end_us - end_us % HOUR_US
        while hour + HOUR_US > start_us:
            lo, hi, wide = slot_bounds(start_us, end_us, hour)
            # Every shard's first page is requested at once: one round trip, not one per shard.
            futures = [self._start(et, hour, s, lo, hi, rows) for et in q.event_types for s in range(self.shards)]
            if wide is not None:  # not part of the range: the busy seconds before it are not fetched
                futures += [self._start_at(et, hour, s, wide) for et in q.event_types for s in range(self.shards)]
            streams = [self._rows(f) for f in futures]
            # Newest slot first across all streams. Rows at or below a slot hold only events before
            # it + 1 s (tally.storage.raw_events), so the events at or after that are complete when
            # the merge reaches it, and go out sorted; earlier ones of wide rows wait for theirs.
            pending: list[tuple[int, str, int, Event]] = []
            current = None
            for neg_slot, events in heapq.merge(*streams, key=lambda r: r[0]):
                if neg_slot != current:
                    complete = SLOT_US - neg_slot
                    yield from out.take(pending, complete)
                    # Stop only once the page moved on: a wide slot can lie past the range's end.
                    moved_on = current is not None and complete <= end_us
                    if moved_on and deadline is not None and time.monotonic() > deadline:
                        yield complete, None
                        return
                    current = neg_slot
                seq = out.seq
                pending += ((-us(e.timestamp), e.event_id, next(seq), e) for e in events)
            yield from out.take(pending, hour)
            if deadline is not None and time.monotonic() > deadline and hour > start_us:
                yield hour, None
                return
            hour -= HOUR_US

    def hour(self, event_type: str, hour_us: int) -> Iterator[Event]:
        """Every stored event of one type and hour, all shards (asked at once), in no order;
        an event stored twice comes twice."""
        futures = [self._start(event_type, hour_us, s, hour_us, hour_us + HOUR_US - 1) for s in range(self.shards)]
        for future in futures:
            for _slot, events in self._rows(future):
                yield from events

    def hour_ids(self, event_type: str, hour_us: int) -> Iterator[Counted]:
        """Like hour(), only the event_id and source of each: for counting (the reconciliation)."""
        futures = [self._start(event_type, hour_us, s, hour_us, hour_us + HOUR_US - 1) for s in range(self.shards)]
        for future in futures:
            for _slot, events in future.result():
                yield from _counted.decode(events)

    def _start(self, event_type: str, hour_us: int, shard: int, lo_us: int, hi_us: int, rows: int = 200):
        stmt = self.select.bind((event_type, from_us(hour_us), shard, from_us(lo_us), from_us(hi_us)))
        stmt.fetch_size = rows
        return self.session.execute_async(stmt, execution_profile=self.profile)

    def _start_at(self, event_type: str, hour_us: int, shard: int, slot_us: int):
        stmt = self.select_at.bind((event_type, from_us(hour_us), shard, from_us(slot_us)))
        return self.session.execute_async(stmt, execution_profile=self.profile)

    @staticmethod
    def _rows(future) -> Iterator[tuple[int, list[Event]]]:
        for slot, events in future.result():  # later pages are fetched as the merge needs them
            yield -us(slot), _events.decode(events)


class _Ordered:
    """Events of a scan going out newest first (then by event_id), each once, filtered."""

    def __init__(self, q: RawQuery, start_us: int, end_us: int):
        self.q, self.start_us, self.end_us = q, start_us, end_us
        self.seen: tuple[int, str] | None = None
        self.seq = count()  # ties (an event stored twice) never compare the events themselves

    def take(self, pending: list, at_or_after_us: int) -> Iterator[tuple[int, Event]]:
        """The events of `pending` at or after `at_or_after_us`, taken out of it."""
        pending.sort()
        ready = bisect_right(pending, -at_or_after_us, key=itemgetter(0))
        q, cursor = self.q, self.q.cursor
        for neg_ts, event_id, _seq, e in pending[:ready]:
            ts = -neg_ts
            if ts < self.start_us or ts > self.end_us or (ts, event_id) == self.seen:
                continue
            self.seen = (ts, event_id)  # an event stored twice (same id and time) is returned once
            if cursor is not None and ts == cursor.ts_us and event_id <= cursor.event_id:
                continue  # already returned: page order is (time desc, event_id asc)
            if q.source is not None and e.source != q.source:
                continue
            if q.user_id is not None and e.user_id != q.user_id:
                continue
            if q.attrs and not _attrs_match(e.attributes or {}, q.attrs):
                continue
            yield ts, e
        del pending[:ready]


def _attrs_match(attrs: dict, wanted: dict[str, str]) -> bool:
    for k, v in wanted.items():
        if k not in attrs:
            return False
        have = attrs[k]
        if isinstance(have, bool):
            if v != ("true" if have else "false"):
                return False
        elif isinstance(have, int | float):
            try:
                if float(v) != float(have):
                    return False
            except ValueError:
                return False
        elif have != v:
            return False
    return True
