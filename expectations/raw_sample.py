"""A sample of raw events from Cassandra, read leniently, for the raw-event suite.

Cassandra has no GX datasource and cannot list the event types it holds without a full scan, so
the sample is taken for the event types the rollups know in the window (plus any asked for), the
newest events of each first, and handed to pandas.

The chunk layout (key, slots, hours) is tally.storage.raw_events'. The events are not decoded with
tally.storage.raw_reader, which decodes with the strict `Event` schema: an event breaking a limit
that schema enforces (33 attributes, say) would raise there and stop the check instead of being
counted as unexpected. Here a chunk's events are read as plain JSON, whatever they hold.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime

import msgspec
import psycopg

from expectations.outcome import StoreUnavailable
from tally.settings import Settings
from tally.storage import raw_events

_SELECT = (
    "select slot, events from event_chunks"
    " where event_type = ? and hour = ? and shard = ? and slot >= ? and slot <= ? limit ?"
)
_TYPES = """
select event_type from rollup_1m where bucket >= %s and bucket < %s
group by event_type order by sum(event_count) desc, event_type limit %s
"""


@dataclass(frozen=True)
class StoredEvent:
    chunk_event_type: str  # the chunk's partition key, where readers look for the event
    shard: int
    slot: datetime
    event: dict | None  # None: the chunk is not a JSON array of objects


def event_types_in_rollups(settings: Settings, start: datetime, end: datetime, most: int) -> list[str]:
    """The `most` busiest event types with minute rows in [start, end)."""
    try:
        with psycopg.connect(settings.pg_dsn, connect_timeout=5) as conn:
            return [t for (t,) in conn.execute(_TYPES, (start, end, most))]
    except psycopg.OperationalError as e:
        raise StoreUnavailable.of("PostgreSQL", settings.pg_host, settings.pg_port, e) from e


def read_sample(
    settings: Settings, event_types: list[str], start: datetime, end: datetime, limit: int
) -> list[StoredEvent]:
    """Up to `limit` events stored in [start, end), an equal share per event type, newest first."""
    if not event_types or limit <= 0:
        return []
    from cassandra.cluster import NoHostAvailable

    cluster = raw_events.cluster(settings)
    try:
        session = cluster.connect(settings.cassandra_keyspace)
    except NoHostAvailable as e:
        cluster.shutdown()
        first = next(iter(e.errors.values()), e)
        raise StoreUnavailable.of(
            "Cassandra", ",".join(settings.cassandra_hosts), settings.cassandra_port, first
        ) from e
    try:
        select = session.prepare(_SELECT)
        share = math.ceil(limit / len(event_types))
        out: list[StoredEvent] = []
        for event_type in event_types:
            out += _newest(session, select, settings.kafka_partitions, event_type, start, end, share)
        return out[:limit]
    finally:
        cluster.shutdown()


def _newest(session, select, shards: int, event_type: str, start: datetime, end: datetime, n: int):
    """The newest `n` stored events of one type, hour by hour back from `end`, all shards at once."""
    start_us, end_us = raw_events.us(start), raw_events.us(end) - 1
    found: list[StoredEvent] = []
    hour = end_us - end_us % raw_events.HOUR_US
    while hour + raw_events.HOUR_US > start_us and len(found) < n:
        lo, hi, wide = raw_events.slot_bounds(start_us, end_us, hour)
        hi = wide or hi  # a sample: the narrow rows between are as good as any
        hour_at, lo_at, hi_at = map(raw_events.from_us, (hour, lo, hi))
        futures = [
            (shard, session.execute_async(select, (event_type, hour_at, shard, lo_at, hi_at, n)))
            for shard in range(shards)
        ]
        rows = [(row.slot, shard, row.events) for shard, f in futures for row in f.result()]
        rows.sort(key=lambda r: r[0], reverse=True)  # newest chunks first
        for slot, shard, blob in rows:
            found += [StoredEvent(event_type, shard, slot, e) for e in _events(blob)]
            if len(found) >= n:
                break
        hour -= raw_events.HOUR_US
    return found[:n]


def _events(blob: bytes) -> list[dict | None]:
    try:
        events = msgspec.json.decode(blob)
    except msgspec.DecodeError:
        return [None]
    if not isinstance(events, list):
        return [None]
    return [e if isinstance(e, dict) else None for e in events]
