"""Where a backfill reads its rows: NDJSON, CSV and Parquet files (plain, gzip or zstd) and a legacy
SQL table, each turned into blocks of JSON lines, one event each, numbered by row.

Every source yields the same thing, so validation is the ingest's own (tally.events.decode) and
a row that cannot even be turned into JSON is rejected with its row number like any other.
- NDJSON: each non-empty line as it is (what the API would have received).
- CSV: a header row names the columns; `event_id`, `event_type`, `timestamp`, `source`, `user_id`
  and `value` are the event's fields, `attributes` a JSON object, and any `attributes.KEY` column
  one attribute (empty cells are left out). Numbers stay text until the schema decides.
- Parquet: the same column names; nested `attributes` structs or maps are taken as they are.
- SQL: the same column names, from a query read through a server-side cursor.
"""

from __future__ import annotations

import contextlib
import csv
import gzip
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path

import msgspec

FIELDS = ("event_id", "event_type", "timestamp", "source", "user_id", "value", "attributes")
# Any valid event is under 43 KB as JSON (tally.api.routes.events); a longer line is refused unread.
MAX_LINE = 1 << 20
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_GZIP_MAGIC = b"\x1f\x8b"


@dataclass
class Block:
    """Consecutive rows of the input: `first` is the number of the first (0-based over all inputs),
    `lines[i]` the JSON of row `first + i`, or an error text if the row could not be made JSON."""

    first: int
    lines: list[bytes | str]


def _json_default(value):
    if isinstance(value, datetime | date):
        return value.isoformat()
    raise TypeError(f"cannot be written as JSON: {type(value).__name__}")


_encode = msgspec.json.Encoder(enc_hook=_json_default).encode


def event_json(record: dict) -> bytes | str:
    """One row as an event's JSON: only the event's fields, `attributes.KEY` columns gathered."""
    event: dict = {}
    attrs: dict = {}
    for key, value in record.items():
        if value is None or value == "":
            continue
        if isinstance(value, Decimal):  # a numeric column: msgspec would write it as a string
            value = float(value)
        if key in FIELDS:
            event[key] = value
        elif key.startswith("attributes."):
            attrs[key.removeprefix("attributes.")] = value
        else:
            return f"{key}: not a field of an event (expected {', '.join(FIELDS)} or attributes.KEY)"
    if isinstance(event.get("attributes"), str):
        try:
            event["attributes"] = json.loads(event["attributes"])
        except ValueError as e:
            return f"attributes: not a JSON object ({e})"
    if isinstance(event.get("attributes"), list):  # a Parquet map arrives as (key, value) pairs
        event["attributes"] = dict(event["attributes"])
    if attrs:
        event["attributes"] = {**(event.get("attributes") or {}), **attrs}
    if isinstance(event.get("value"), str):
        with contextlib.suppress(ValueError):  # else left as text: the schema says why it is refused
            event["value"] = float(event["value"])
    try:
        return _encode(event)
    except (TypeError, OverflowError) as e:
        return str(e)


def open_bytes(path: Path) -> io.BufferedIOBase:
    """The file's content, decompressed if it is gzip or zstd (told by its first bytes)."""
    raw = open(path, "rb")  # noqa: SIM115 - returned to the caller, who closes it
    head = raw.peek(4)[:4] if hasattr(raw, "peek") else b""
    if head[:2] == _GZIP_MAGIC:
        return gzip.GzipFile(fileobj=raw)
    if head == _ZSTD_MAGIC:
        import zstandard

        return io.BufferedReader(zstandard.ZstdDecompressor().stream_reader(raw, closefd=True))
    return raw


def kind_of(path: Path) -> str:
    """ndjson, csv or parquet, from the name (compression suffixes aside)."""
    suffixes = [s.lower() for s in path.suffixes if s.lower() not in (".gz", ".zst", ".zstd")]
    last = suffixes[-1] if suffixes else ""
    if last in (".ndjson", ".jsonl", ".json"):
        return "ndjson"
    if last == ".csv":
        return "csv"
    if last in (".parquet", ".pq"):
        return "parquet"
    raise ValueError(f"{path}: cannot tell the format from the name (.ndjson, .jsonl, .csv or .parquet)")


def _ndjson(path: Path) -> Iterator[bytes | str]:
    """Lines, each read at most MAX_LINE bytes at a time: a line longer than any event can be is
    refused without ever being held whole."""
    with open_bytes(path) as f:
        while line := f.readline(MAX_LINE + 1):
            if len(line) > MAX_LINE and not line.endswith(b"\n"):
                while (rest := f.readline(MAX_LINE)) and not rest.endswith(b"\n"):
                    pass
                yield f"the line is longer than {MAX_LINE} bytes: no event is"
                continue
            line = line.strip()
            if line:
                yield line


def _csv(path: Path) -> Iterator[bytes | str]:
    with open_bytes(path) as f, io.TextIOWrapper(f, encoding="utf-8", errors="strict", newline="") as text:
        reader = csv.DictReader(text)
        while True:
            try:
                record = next(reader)
            except StopIteration:
                return
            except csv.Error as e:  # a cell over the csv module's limit (128 KiB), a stray NUL
                yield f"not a CSV row: {e}"
                continue
            except UnicodeDecodeError as e:
                yield f"not UTF-8: {e}"
                return
            if None in record:
                yield f"the row has {len(record[None])} more cells than the header has columns"
            else:
                yield event_json(record)


def _parquet(path: Path, batch_rows: int) -> Iterator[bytes | str]:
    import pyarrow.parquet as pq

    with open_bytes(path) as f:
        parquet = pq.ParquetFile(f)
        for batch in parquet.iter_batches(batch_size=batch_rows):
            for record in batch.to_pylist():
                yield event_json(record)


def rows_of(paths: list[Path], batch_rows: int = 50_000) -> Iterator[bytes | str]:
    """Every row of the files, in the order given, as event JSON (or the reason it is not)."""
    for path in paths:
        kind = kind_of(path)
        if kind == "ndjson":
            yield from _ndjson(path)
        elif kind == "csv":
            yield from _csv(path)
        else:
            yield from _parquet(path, batch_rows)


def sql_rows(dsn: str, query: str, params: dict | None = None, fetch: int = 10_000) -> Iterator[bytes | str]:
    """A legacy table's rows, read `fetch` at a time through a server-side cursor (the whole result
    is never held): columns named as the event's fields."""
    import psycopg
    from psycopg.rows import dict_row

    with psycopg.connect(dsn) as conn, conn.cursor(name="tally_backfill", row_factory=dict_row) as cur:
        cur.itersize = fetch
        cur.execute(query, params)
        for record in cur:
            yield event_json(record)


def blocks(rows: Iterator[bytes | str], size: int) -> Iterator[Block]:
    """Rows in blocks of `size` (the last may be shorter), numbered from 0."""
    first, lines = 0, []
    for line in rows:
        lines.append(line)
        if len(lines) == size:
            yield Block(first, lines)
            first, lines = first + size, []
    if lines:
        yield Block(first, lines)
