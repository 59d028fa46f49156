"""Raw events in Cassandra: batched idempotent writes, and newest-first filtered reads with a cursor."""

from __future__ import annotations

import base64
import heapq
import json
import logging
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from tally.events.schema import Event, encode_event
from tally.settings import Settings

HOUR_S = 3600
# Rows per unlogged batch: all rows of a batch share one partition, so Cassandra applies it as a
# single mutation; 50 small events stay under the 64 KiB batch warning.
BATCH_ROWS = 50


def hour_of(ts: datetime) -> datetime:
    return ts.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


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


class RawEventWriter:
    def __init__(self, session, settings: Settings):
        from cassandra.query import BatchStatement, BatchType

        self.session = session
        self.ttl = settings.raw_ttl_s
        self._batch = lambda: BatchStatement(batch_type=BatchType.UNLOGGED)
        self.insert = session.prepare(
            "insert into events_by_type (event_type, hour, shard, ts, event_id, source, user_id, body)"
            " values (?, ?, ?, ?, ?, ?, ?, ?) using ttl ?"
        )

    def write(self, events: Iterable[Event], shard: int) -> int:
        """Write events, grouped per Cassandra partition, concurrently; raises if any write failed."""
        from cassandra.concurrent import execute_concurrent

        groups: dict[tuple[str, datetime], list[Event]] = defaultdict(list)
        n = 0
        for e in events:
            groups[(e.event_type, hour_of(e.timestamp))].append(e)
            n += 1
        statements = []
        for (event_type, hour), evs in groups.items():
            for i in range(0, len(evs), BATCH_ROWS):
                batch = self._batch()
                for e in evs[i : i + BATCH_ROWS]:
                    batch.add(
                        self.insert,
                        (
                            event_type,
                            hour,
                            shard,
                            e.timestamp,
                            e.event_id,
                            e.source,
                            e.user_id,
                            encode_event(e).decode(),
                            self.ttl,
                        ),
                    )
                statements.append((batch, ()))
        if statements:
            for ok, result in execute_concurrent(self.session, statements, concurrency=32, raise_on_first_error=True):
                if not ok:
                    raise result
        return n


@dataclass(frozen=True)
class Cursor:
    ts_ms: int
    event_id: str

    def encode(self) -> str:
        return base64.urlsafe_b64encode(json.dumps([self.ts_ms, self.event_id]).encode()).decode()

    @classmethod
    def decode(cls, text: str) -> Cursor:
        ts_ms, event_id = json.loads(base64.urlsafe_b64decode(text.encode()))
        return cls(int(ts_ms), str(event_id))


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
            "select ts, event_id, source, user_id, body from events_by_type"
            " where event_type = ? and hour = ? and shard = ? and ts >= ? and ts <= ?"
        )

    def page(self, q: RawQuery) -> tuple[list[str], Cursor | None]:
        """One page of matching events' JSON bodies, newest first, and the cursor of the next page."""
        out: list[str] = []
        last = None
        for ts_ms, event_id, body in self._matching(q):
            if len(out) == q.limit:
                return out, last
            out.append(body)
            last = Cursor(ts_ms, event_id)
        return out, None

    def _matching(self, q: RawQuery) -> Iterator[tuple[int, str, str]]:
        end_ms = _ms(q.end) - 1
        if q.cursor is not None:
            end_ms = min(end_ms, q.cursor.ts_ms)
        start_ms = _ms(q.start)
        if end_ms < start_ms:
            return
        hour = hour_of(datetime.fromtimestamp(end_ms / 1000, UTC))
        first_hour = hour_of(q.start)
        while hour >= first_hour:
            lo = max(start_ms, _ms(hour))
            hi = min(end_ms, _ms(hour) + HOUR_S * 1000 - 1)
            streams = [self._scan(et, hour, shard, lo, hi) for et in q.event_types for shard in range(self.shards)]
            for key, source, user_id, body in heapq.merge(*streams):
                ts_ms, event_id = -key[0], key[1]
                if q.cursor is not None and ts_ms == q.cursor.ts_ms and event_id <= q.cursor.event_id:
                    continue  # already returned: page order is (ts desc, event_id asc)
                if q.source is not None and source != q.source:
                    continue
                if q.user_id is not None and user_id != q.user_id:
                    continue
                if q.attrs and not _attrs_match(body, q.attrs):
                    continue
                yield ts_ms, event_id, body
            hour -= timedelta(hours=1)

    def _scan(self, event_type: str, hour: datetime, shard: int, lo_ms: int, hi_ms: int):
        stmt = self.select.bind((event_type, hour, shard, _dt(lo_ms), _dt(hi_ms)))
        stmt.fetch_size = 500
        for row in self.session.execute(stmt):
            yield (-_ms(row.ts), row.event_id), row.source, row.user_id, row.body


def _attrs_match(body: str, wanted: dict[str, str]) -> bool:
    attrs = json.loads(body).get("attributes") or {}
    for k, v in wanted.items():
        if k not in attrs:
            return False
        have = attrs[k]
        text = ("true" if have else "false") if isinstance(have, bool) else str(have)
        if text != v and not (isinstance(have, int | float) and not isinstance(have, bool) and _num_eq(have, v)):
            return False
    return True


def _num_eq(have: float, text: str) -> bool:
    try:
        return float(text) == float(have)
    except ValueError:
        return False


def _ms(dt: datetime) -> int:
    if dt.tzinfo is None:  # the driver returns naive UTC datetimes
        dt = dt.replace(tzinfo=UTC)
    # Integer arithmetic: Cassandra keeps milliseconds, and float rounding must not move an event.
    return int(dt.replace(microsecond=0).timestamp()) * 1000 + dt.microsecond // 1000


def _dt(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)
