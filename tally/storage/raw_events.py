"""Raw events in Cassandra, in chunks (see tally/schema/cassandra.cql): the layout shared by the
writer (tally.storage.raw_writer), the reader (tally.storage.raw_reader) and the correction step."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

from tally.settings import Settings

# One second of event time per chunk row (RawBatch groups by whole seconds): with many event types
# of a few events per second each, shorter slots degenerate into a row per event (measured: 2,500
# types at 20 K events/s).
SLOT_US = 1_000_000
HOUR_US = 3_600_000_000


def us(dt: datetime) -> int:
    """Microseconds since the epoch, exactly (no float rounding)."""
    if dt.tzinfo is None:  # the driver returns naive UTC datetimes
        dt = dt.replace(tzinfo=UTC)
    delta = dt - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def from_us(t: int) -> datetime:
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=t)


def chunk_key(second: int) -> tuple[datetime, datetime]:
    """(hour, slot) of the chunk rows that hold an event of this epoch second."""
    slot_us = second * SLOT_US
    return from_us(slot_us - slot_us % HOUR_US), from_us(slot_us)


def cluster(settings: Settings):
    from cassandra.cluster import Cluster
    from cassandra.policies import DCAwareRoundRobinPolicy

    logging.getLogger("cassandra").setLevel(logging.ERROR)
    return Cluster(
        settings.cassandra_hosts,
        port=settings.cassandra_port,
        protocol_version=5,
        load_balancing_policy=DCAwareRoundRobinPolicy(local_dc=settings.cassandra_local_dc),
    )


INSERT_CHUNK = (
    "insert into event_chunks (event_type, hour, shard, slot, first_offset, events)"
    " values (?, ?, ?, ?, ?, ?) using ttl ?"
)
DELETE_CHUNK = (
    "delete from event_chunks where event_type = ? and hour = ? and shard = ? and slot = ? and first_offset = ?"
)
