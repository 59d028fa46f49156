"""Raw events in Cassandra, in chunks (see tally/schema/cassandra.cql): the layout shared by the
writer (tally.storage.raw_writer), the reader (tally.storage.raw_reader) and the correction step."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

from tally.settings import Settings

# Chunk rows hold one second of event time (a narrow slot), or, for an event type with few events a
# second in a flush, a window of WINDOW_S seconds (a wide slot). One second per row suits busy types:
# a reader's first page needs only the newest second. For sparse types it degenerates into a row per
# event or two: a backlog flush spans several seconds of thousands of types, and Cassandra's cost
# follows rows, not bytes (at 10,000 keys a minute it took 40-65 % of a core, 23 % at 32 keys).
# A narrow row's slot is its second; a wide row's is its window's end less 1 ms, which no narrow row
# has (slots are whole seconds otherwise). So every row holds only events before its slot + 1 s,
# which lets a reader going newest slot first emit events as soon as the slots above them are in,
# and a reader can ask for a range's narrow rows and the one wide slot that reaches past its end
# without fetching the busy seconds in between (tally.storage.raw_reader).
SLOT_US = 1_000_000
WINDOW_S = 10  # divides an hour, so a window never crosses a partition's hour
WINDOW_US = WINDOW_S * SLOT_US
WIDE_EARLY_US = 1_000  # a wide slot is this much before its window's end (Cassandra keeps ms)
HOUR_US = 3_600_000_000


def us(dt: datetime) -> int:
    """Microseconds since the epoch, exactly (no float rounding)."""
    if dt.tzinfo is None:  # the driver returns naive UTC datetimes
        dt = dt.replace(tzinfo=UTC)
    delta = dt - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def from_us(t: int) -> datetime:
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=t)


def chunk_key(slot_us: int) -> tuple[datetime, datetime]:
    """(hour, slot) of the chunk rows at this slot (us since the epoch)."""
    return from_us(slot_us - slot_us % HOUR_US), from_us(slot_us)


def narrow_slot(second: int) -> int:
    return second * SLOT_US


def wide_slot(second: int) -> int:
    """The slot (us) of the wide rows that may hold an event of this epoch second."""
    return (second - second % WINDOW_S + WINDOW_S) * SLOT_US - WIDE_EARLY_US


def slots_of(second: int) -> tuple[int, int]:
    """Every slot (us) whose rows may hold an event of this second: its own, and its window's."""
    return narrow_slot(second), wide_slot(second)


def slot_bounds(start_us: int, end_us: int, hour_us: int) -> tuple[int, int, int | None]:
    """(lo, hi, wide): the rows of one hour that may hold events in [start_us, end_us] are those
    with a slot in [lo, hi], and those at `wide`, the wide slot reaching past `hi` (None if none)."""
    lo = max(start_us, hour_us) // SLOT_US * SLOT_US
    hi = min(end_us, hour_us + HOUR_US - 1)
    wide = wide_slot(hi // SLOT_US)
    return lo, hi, (wide if wide > hi else None)


def cluster(settings: Settings):
    from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, ExecutionProfile
    from cassandra.policies import DCAwareRoundRobinPolicy

    logging.getLogger("cassandra").setLevel(logging.ERROR)
    # Execution profiles, not the driver's legacy settings: the reader asks with a profile of its own.
    default = ExecutionProfile(load_balancing_policy=DCAwareRoundRobinPolicy(local_dc=settings.cassandra_local_dc))
    return Cluster(
        settings.cassandra_hosts,
        port=settings.cassandra_port,
        protocol_version=5,
        execution_profiles={EXEC_PROFILE_DEFAULT: default},
    )


INSERT_CHUNK = (
    "insert into event_chunks (event_type, hour, shard, slot, first_offset, events)"
    " values (?, ?, ?, ?, ?, ?) using ttl ?"
)
DELETE_CHUNK = (
    "delete from event_chunks where event_type = ? and hour = ? and shard = ? and slot = ? and first_offset = ?"
)
