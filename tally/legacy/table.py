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
_COLUMNS = ", ".join(COLUMNS)

# How the PostgreSQL sink stages a batch: the events' JSON as it came (one jsonb per line), or rows
# parsed in Python when PostgreSQL reads a field of the JSON differently. Staged, then inserted with
# the legacy table's own dedup: an event forwarded twice is stored once.
JSON_STAGE, ROW_STAGE = "json", "rows"
STAGES = {
    JSON_STAGE: "create temp table if not exists legacy_stage_json (doc jsonb) on commit delete rows",
    ROW_STAGE: "create temp table if not exists legacy_stage_rows (like {t}) on commit delete rows",
}
INSERTS = {
    JSON_STAGE: (
        f"insert into {{t}} ({_COLUMNS}) select doc->>'event_id', doc->>'event_type',"
        " coalesce(doc->>'source', 'unknown'), (doc->>'timestamp')::timestamptz, doc->>'user_id',"
        " (doc->>'value')::float8, doc->'attributes' from legacy_stage_json on conflict (event_id) do nothing"
    ),
    ROW_STAGE: (
        f"insert into {{t}} ({_COLUMNS}) select {_COLUMNS} from legacy_stage_rows on conflict (event_id) do nothing"
    ),
}
# CSV with a delimiter and a quote that valid JSON cannot hold unescaped (control characters): each
# line is one field, verbatim, with no escaping to do.
COPY_DOCUMENTS = "copy legacy_stage_json (doc) from stdin (format csv, delimiter e'\\x02', quote e'\\x01')"
COPY_ROWS = f"copy legacy_stage_rows ({_COLUMNS}) from stdin"

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
