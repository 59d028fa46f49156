"""Backfill inputs: every format becomes the JSON an ingest would see, row for row, and a row that
cannot become JSON says why; positions of backfilled raw rows never meet the stream's."""

from __future__ import annotations

import gzip
import json
from datetime import UTC, datetime

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard

from tally.backfill import ledger, sources
from tally.backfill.day_source import files_of_day
from tally.flush import position

EVENT = {"event_id": "e1", "event_type": "page.view", "timestamp": "2026-11-01T10:00:00+00:00", "value": 1.5}


def test_ndjson_lines_come_as_they_are_plain_gzip_or_zstd(tmp_path):
    lines = [json.dumps(EVENT).encode(), b"{broken", json.dumps({**EVENT, "event_id": "e2"}).encode()]
    body = b"\n".join(lines) + b"\n\n"
    (tmp_path / "a.ndjson").write_bytes(body)
    (tmp_path / "b.jsonl.gz").write_bytes(gzip.compress(body))
    (tmp_path / "c.ndjson.zst").write_bytes(zstandard.ZstdCompressor().compress(body))
    for name in ("a.ndjson", "b.jsonl.gz", "c.ndjson.zst"):
        assert list(sources.rows_of([tmp_path / name])) == lines


def test_csv_columns_become_fields_and_attributes(tmp_path):
    path = tmp_path / "h.csv"
    path.write_text(
        "event_id,event_type,timestamp,value,user_id,attributes.country,attributes\n"
        'e1,page.view,2026-11-01T10:00:00Z,2.5,,de,"{""plan"": ""pro""}"\n'
        "e2,page.view,2026-11-01T10:00:00Z,lots,u1,,\n"
        "e3,page.view,2026-11-01T10:00:00Z,1,u1,fr,,extra\n"
    )
    rows = list(sources.rows_of([path]))
    assert json.loads(rows[0]) == {
        "event_id": "e1",
        "event_type": "page.view",
        "timestamp": "2026-11-01T10:00:00Z",
        "value": 2.5,
        "attributes": {"plan": "pro", "country": "de"},
    }
    assert json.loads(rows[1])["value"] == "lots"  # left for the schema to refuse, with its reason
    assert rows[2] == "the row has 1 more cells than the header has columns"


def test_parquet_typed_columns_become_json(tmp_path):
    path = tmp_path / "h.parquet"
    at = datetime(2026, 11, 1, 10, tzinfo=UTC)
    pq.write_table(
        pa.Table.from_pylist([{"event_id": "e1", "event_type": "t", "timestamp": at, "value": 2.0, "user_id": None}]),
        path,
    )
    assert json.loads(next(sources.rows_of([path]))) == {
        "event_id": "e1",
        "event_type": "t",
        "timestamp": "2026-11-01T10:00:00Z",
        "value": 2.0,
    }


def test_sql_numbers_and_times_become_json_numbers_and_times():
    from decimal import Decimal

    row = {
        "event_id": "e1",
        "event_type": "t",
        "timestamp": datetime(2026, 11, 1, 10, tzinfo=UTC),
        "value": Decimal("2.5"),
    }
    assert json.loads(sources.event_json(row)) == {**row, "timestamp": "2026-11-01T10:00:00Z", "value": 2.5}


def test_a_column_that_is_no_field_is_named():
    assert sources.event_json({**EVENT, "colour": "red"}) == (
        "colour: not a field of an event (expected event_id, event_type, timestamp, source, user_id, value,"
        " attributes or attributes.KEY)"
    )
    assert sources.event_json({**EVENT, "attributes": "{nope"}).startswith("attributes: not a JSON object")


def test_the_format_comes_from_the_name():
    assert sources.kind_of(__import__("pathlib").Path("x.CSV.gz")) == "csv"
    with pytest.raises(ValueError, match="cannot tell the format"):
        sources.kind_of(__import__("pathlib").Path("x.txt"))


def test_blocks_number_rows_across_inputs():
    got = [(b.first, b.lines) for b in sources.blocks(iter([b"1", b"2", b"3", b"4", b"5"]), 2)]
    assert got == [(0, [b"1", b"2"]), (2, [b"3", b"4"]), (4, [b"5"])]


def test_backfill_positions_rise_in_input_order_and_never_meet_the_streams():
    a, b, c = ledger.position(7, 0, 5), ledger.position(7, 0, 6), ledger.position(7, 1, 0)
    assert a < b < c < 0 <= position(0, 0)
    assert ledger.writer_of(c) == (7, 1) and ledger.writer_of(position(12, 3)) is None
    top = ledger.position(ledger.MAX_RUNS - 1, (1 << ledger.CHUNK_BITS) - 1, ledger.MAX_CHUNK_ROWS - 1)
    assert top < 0 and ledger.writer_of(top) == (ledger.MAX_RUNS - 1, (1 << ledger.CHUNK_BITS) - 1)


def test_a_days_files_are_found_by_name(tmp_path):
    (tmp_path / "2026-11-02").mkdir()
    (tmp_path / "2026-11-02" / "part-1.ndjson").write_text("{}")
    (tmp_path / "2026-11-02" / "SHA256SUMS").write_text("")
    (tmp_path / "events-2026-11-02.csv.gz").write_bytes(b"")
    (tmp_path / "events-2026-11-03.csv.gz").write_bytes(b"")
    assert [p.name for p in files_of_day(tmp_path, "2026-11-02")] == ["part-1.ndjson", "events-2026-11-02.csv.gz"]


def test_hostile_rows_become_reasons_and_the_rest_is_read(tmp_path):
    huge = tmp_path / "huge.ndjson"
    with huge.open("wb") as f:
        f.write(json.dumps(EVENT).encode() + b"\n" + b"x" * (3 * sources.MAX_LINE) + b"\n" + json.dumps(EVENT).encode())
    rows = list(sources.rows_of([huge]))
    assert rows[1] == f"the line is longer than {sources.MAX_LINE} bytes: no event is"
    assert rows[0] == rows[2] == json.dumps(EVENT).encode()
    wide = tmp_path / "wide.csv"
    wide.write_text(
        f"event_id,event_type,timestamp\ne1,{'t' * 200_000},2026-11-01T10:00:00Z\ne2,t,2026-11-01T10:00:00Z\n"
    )
    rows = list(sources.rows_of([wide]))
    assert rows[0].startswith("not a CSV row: field larger than field limit")
    assert json.loads(rows[-1])["event_id"] == "e2"
