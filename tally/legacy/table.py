"""The legacy events table: what the PostgreSQL sink writes and the PostgreSQL adapter reads.

One row per event, keyed by event_id, so an event forwarded twice (a retried batch whose first
try did land) is stored once, as the legacy system would deduplicate it."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import msgspec
from psycopg import sql

from tally.events.schema import Event

DDL = """
create table if not exists {table} (
    event_id text primary key,
    event_type text not null,
    source text not null,
    ts timestamptz not null,
    user_id text,
    value double precision,
    attributes jsonb
);
create index if not exists {ts_index} on {table} (ts, event_type)
"""
COLUMNS = ("event_id", "event_type", "source", "ts", "user_id", "value", "attributes")

_decode = msgspec.json.Decoder(Event).decode
_encode = msgspec.json.Encoder().encode


def create(table: str) -> list[sql.Composed]:
    """The statements that create the table if it is missing."""
    return [
        sql.SQL(part).format(table=sql.Identifier(table), ts_index=sql.Identifier(f"{table}_ts"))
        for part in DDL.split(";")
    ]


def rows(values: Iterable[bytes]) -> Iterator[tuple]:
    """Table rows of events as the API accepted them (one JSON document each, already valid)."""
    for value in values:
        e = _decode(value)
        attributes = _encode(e.attributes).decode() if e.attributes is not None else None
        yield e.event_id, e.event_type, e.source, e.timestamp, e.user_id, e.value, attributes
