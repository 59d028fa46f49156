"""Raw events in Cassandra, in chunks (see tally/schema/cassandra.cql): batched idempotent writes,
and newest-first filtered reads with a cursor."""

from __future__ import annotations

import base64
import heapq
import json
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import msgspec

from tally.events.schema import Event
from tally.rollup import RawBatch
from tally.settings import Settings

# One second of event time per chunk row (RawBatch groups by whole seconds): with many event types
# of a few events per second each, shorter slots degenerate into a row per event (measured: 2,500
# types at 20 K events/s).
SLOT_US = 1_000_000
HOUR_US = 3_600_000_000
# A chunk row holds at most this much. Pieces are cut at the same events whenever the same flush is
# written again, and a restarted partition cuts its flushes where they ended before (tally.dedup).
# Only with dedup off can a replay cut elsewhere leave a stale tail piece, whose events the reader
# returns once (it drops repeats of the same event_id and time).
PIECE_EVENTS = 2000
PIECE_BYTES = 1 << 20
# Small rows are sent in unlogged batches of at most this much (under cassandra.yaml's
# batch_size_fail_threshold). With one node every partition is local; on a cluster, batches would
# be grouped by replica.
BATCH_BYTES = 256 << 10
BATCH_ROWS = 200
_events = msgspec.json.Decoder(list[Event])


def us(dt: datetime) -> int:
    """Microseconds since the epoch, exactly (no float rounding)."""
    if dt.tzinfo is None:  # the driver returns naive UTC datetimes
        dt = dt.replace(tzinfo=UTC)
    delta = dt - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def from_us(t: int) -> datetime:
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=t)


def cluster(settings: Settings):
    from cassandra.cluster import Cluster
    from cassandra.policies import DCAwareRoundRobinPolicy

    logging.getLogger("cassandra").setLevel(logging.ERROR)
    return Cluster(
        ["127.0.0.1"],
        port=settings.cassandra_port,
        protocol_version=5,
        load_balancing_policy=DCAwareRoundRobinPolicy(local_dc="datacenter1"),
    )


INSERT_CHUNK = (
    "insert into event_chunks (event_type, hour, shard, slot, first_offset, events)"
    " values (?, ?, ?, ?, ?, ?) using ttl ?"
)


class RefusedRows(Exception):
    """Cassandra refused some chunk rows for what they hold (retrying cannot help) and took the
    rest: {stream position of each event in a refused row: the reason}."""

    def __init__(self, positions: dict[int, str]):
        super().__init__(f"Cassandra refused {len(positions)} events")
        self.positions = positions


class RawEventWriter:
    def __init__(self, session, settings: Settings):
        self.session = session
        self.ttl = settings.raw_ttl_s
        self.insert = session.prepare(INSERT_CHUNK)

    def write(self, raw: RawBatch, shard: int) -> int:
        """Write events as one chunk row per (event_type, second), split into bounded pieces.
        Raises RefusedRows if Cassandra refused some rows for their content (the others are
        written), or the error of a write that kept failing otherwise."""
        from cassandra import InvalidRequest

        statements, rows = self._statements(raw, shard)
        # Large rows fill the socket's send buffer, and the driver then fails further requests at
        # once (ConnectionBusy) instead of queueing them: retry just those, soon. Rows are
        # idempotent, so a retry rewrites the same data; a longer outage raises to the caller.
        refused: dict[int, str] = {}
        for attempt in range(8):
            failed = []
            for i, error in self._run(statements):
                if isinstance(error, InvalidRequest):
                    refused.update(self._isolate(statements[i], rows[i], error))
                else:
                    failed.append((i, error))
            if not failed:
                if refused:
                    raise RefusedRows(refused)
                return len(raw)
            statements = [statements[i] for i, _e in failed]
            rows = [rows[i] for i, _e in failed]
            time.sleep(0.02 * 2**attempt)
        raise failed[0][1]

    def _statements(self, raw: RawBatch, shard: int) -> tuple[list, list[list[tuple]]]:
        """(statement, params or None) pairs, and the rows each carries as (params, positions)."""
        statements, rows = [], []
        batch, batch_bytes, batch_rows = None, 0, []
        for (event_type, second), (positions, lines) in raw.chunks.items():
            slot_us = second * SLOT_US
            hour = from_us(slot_us - slot_us % HOUR_US)
            slot = from_us(slot_us)
            for start, end in _pieces(lines):
                body = b"[" + b",".join(lines[start:end]) + b"]"
                row = (event_type, hour, shard, slot, positions[start], body, self.ttl)
                held = (row, positions[start:end])
                if len(body) >= BATCH_BYTES:
                    statements.append((self.insert, row))
                    rows.append([held])
                    continue
                # Thousands of event types each write a small row per flush: one request per row
                # spent most of the dataflow's CPU in the driver's Python I/O thread (py-spy). Small
                # rows go in unlogged batches instead: one request, the same idempotent rows.
                if batch is None or batch_bytes + len(body) > BATCH_BYTES or len(batch) >= BATCH_ROWS:
                    batch, batch_bytes, batch_rows = self._batch(), 0, []
                    statements.append((batch, None))
                    rows.append(batch_rows)
                batch.add(self.insert, row)
                batch_rows.append(held)
                batch_bytes += len(body)
        return statements, rows

    def _run(self, statements: list) -> list[tuple[int, Exception]]:
        from cassandra.concurrent import execute_concurrent

        results = execute_concurrent(self.session, statements, concurrency=16, raise_on_first_error=False)
        return [(i, result) for i, (ok, result) in enumerate(results) if not ok]

    def _isolate(self, statement, rows: list[tuple], error: Exception) -> dict[int, str]:
        """A refused request: which of its rows are refused (a batch is tried row by row)."""
        from cassandra import InvalidRequest

        if len(rows) == 1:
            return dict.fromkeys(rows[0][1], f"refused by Cassandra: {error}")
        refused: dict[int, str] = {}
        for row, positions in rows:
            try:
                self.session.execute(self.insert, row)
            except InvalidRequest as e:
                refused.update(dict.fromkeys(positions, f"refused by Cassandra: {e}"))
        return refused

    @staticmethod
    def _batch():
        from cassandra.query import BatchStatement, BatchType

        return BatchStatement(batch_type=BatchType.UNLOGGED)


def _pieces(lines: list[bytes]) -> Iterator[tuple[int, int]]:
    """Split a chunk into [start, end) ranges so no row passes PIECE_EVENTS events or PIECE_BYTES
    (Cassandra refuses a mutation over half a commit-log segment; a replayed backlog of one second
    can be huge)."""
    if len(lines) <= PIECE_EVENTS and sum(map(len, lines)) + len(lines) <= PIECE_BYTES:
        yield 0, len(lines)
        return
    start = size = 0
    for i, line in enumerate(lines):
        if i > start and (i - start == PIECE_EVENTS or size + len(line) > PIECE_BYTES):
            yield start, i
            start, size = i, 0
        size += len(line) + 1
    yield start, len(lines)


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
        self._encode = msgspec.json.Encoder().encode

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
        hour = end_us - end_us % HOUR_US
        while hour + HOUR_US > start_us:
            lo = max(start_us, hour) // SLOT_US * SLOT_US
            hi = min(end_us, hour + HOUR_US - 1) // SLOT_US * SLOT_US
            # Every shard's first page is requested at once: one round trip, not one per shard.
            futures = [self._start(et, hour, s, lo, hi) for et in q.event_types for s in range(self.shards)]
            streams = [self._rows(f) for f in futures]
            # Slots do not overlap in time, so newest-first across slots is the streams' merge;
            # inside one slot the events of every chunk are sorted together.
            slot_events: list[tuple[int, str, Event]] = []
            current = None
            for neg_slot, events in heapq.merge(*streams, key=lambda r: r[0]):
                if neg_slot != current:
                    yield from self._sorted(slot_events, q, start_us, end_us)
                    if current is not None and deadline is not None and time.monotonic() > deadline:
                        yield -current, None
                        return
                    slot_events, current = [], neg_slot
                slot_events.extend((us(e.timestamp), e.event_id, e) for e in events)
            yield from self._sorted(slot_events, q, start_us, end_us)
            if deadline is not None and time.monotonic() > deadline and hour > start_us:
                yield hour, None
                return
            hour -= HOUR_US

    def _sorted(self, items, q: RawQuery, start_us: int, end_us: int) -> Iterator[tuple[int, Event]]:
        items.sort(key=lambda t: (-t[0], t[1]))
        seen = None
        for ts, event_id, e in items:
            if ts < start_us or ts > end_us or event_id == seen:
                continue
            seen = event_id  # an event stored twice (same id and time) is returned once
            if q.cursor is not None and ts == q.cursor.ts_us and event_id <= q.cursor.event_id:
                continue  # already returned: page order is (time desc, event_id asc)
            if q.source is not None and e.source != q.source:
                continue
            if q.user_id is not None and e.user_id != q.user_id:
                continue
            if q.attrs and not _attrs_match(e.attributes or {}, q.attrs):
                continue
            yield ts, e

    def hour(self, event_type: str, hour_us: int) -> Iterator[Event]:
        """Every stored event of one type and hour, all shards (asked at once), in no order;
        an event stored twice comes twice."""
        futures = [self._start(event_type, hour_us, s, hour_us, hour_us + HOUR_US - 1) for s in range(self.shards)]
        for future in futures:
            for _slot, events in self._rows(future):
                yield from events

    def _start(self, event_type: str, hour_us: int, shard: int, lo_us: int, hi_us: int):
        stmt = self.select.bind((event_type, from_us(hour_us), shard, from_us(lo_us), from_us(hi_us)))
        stmt.fetch_size = 200
        return self.session.execute_async(stmt)

    @staticmethod
    def _rows(future) -> Iterator[tuple[int, list[Event]]]:
        for row in future.result():  # later pages are fetched as the merge needs them
            yield -us(row.slot), _events.decode(row.events)


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
