"""The TimescaleDB features Tally's rollups rely on, run on a real TimescaleDB engine.

PGlite takes one connection at a time, so each test opens and closes its own.
"""

import psycopg
import pytest

pytestmark = pytest.mark.timescaledb


@pytest.fixture
def conn(timescaledb_dsn):
    with psycopg.connect(timescaledb_dsn, autocommit=True) as c:
        yield c
        c.execute("drop table if exists conf_rollup cascade")


def test_hypertable_upsert_overwrites_and_time_bucket_regroups(conn):
    conn.execute(
        "create table conf_rollup (bucket timestamptz not null, event_type text not null, n bigint not null,"
        " primary key (event_type, bucket))"
    )
    conn.execute("select create_hypertable('conf_rollup', by_range('bucket', interval '1 day'))")
    rows = [(f"2026-11-26T10:{m:02d}:00Z", "click", m) for m in range(60)]
    upsert = "insert into conf_rollup values (%s, %s, %s) on conflict (event_type, bucket) do update set n = excluded.n"
    with conn.cursor() as cur:
        cur.executemany(upsert, rows)
        cur.executemany(upsert, rows)  # a replayed batch must not double count
    total = conn.execute("select time_bucket('1 hour', bucket), sum(n) from conf_rollup group by 1").fetchall()
    assert len(total) == 1 and total[0][1] == sum(range(60))


def test_continuous_aggregate_refresh_and_compression(conn):
    conn.execute("create table conf_rollup (bucket timestamptz not null, k text not null, n bigint not null)")
    conn.execute("select create_hypertable('conf_rollup', by_range('bucket', interval '1 day'))")
    conn.execute(
        "insert into conf_rollup select timestamptz '2026-11-20' + i * interval '1 minute', 'k' || (i % 3), 1"
        " from generate_series(0, 2 * 1440 - 1) i"
    )
    conn.execute(
        "create materialized view conf_hourly with (timescaledb.continuous) as"
        " select time_bucket('1 hour', bucket) as hour, k, sum(n) as n from conf_rollup group by 1, 2"
        " with no data"
    )
    conn.execute("call refresh_continuous_aggregate('conf_hourly', null, null)")
    assert conn.execute("select count(*), sum(n) from conf_hourly").fetchone() == (48 * 3, 2 * 1440)
    conn.execute("alter table conf_rollup set (timescaledb.compress, timescaledb.compress_segmentby = 'k')")
    compressed = conn.execute("select count(compress_chunk(c)) from show_chunks('conf_rollup') c").fetchone()[0]
    assert compressed >= 2
    assert conn.execute("select sum(n) from conf_rollup").fetchone()[0] == 2 * 1440


def test_the_rollup_schema_becomes_a_hypertable_and_takes_flushes(timescaledb_dsn, monkeypatch):
    from datetime import UTC, datetime

    from tally.cells import Acc, RollupRow
    from tally.flush import Flush
    from tally.storage import rollup_store

    # PGlite crashes on COPY FROM STDIN: the rows are staged with INSERTs; the merge is the product's.
    def insert_rows(cur, params):
        cur.executemany(f"insert into flush_rows values ({', '.join(['%s'] * 11)})", params)

    monkeypatch.setattr(rollup_store, "stage_rows", insert_rows)

    with psycopg.connect(timescaledb_dsn, autocommit=True) as conn:
        rollup_store.apply_schema(conn)
        rollup_store.apply_schema(conn)  # idempotent
        tables = conn.execute("select hypertable_name from timescaledb_information.hypertables").fetchall()
        assert {("rollup_1m",), ("rollup_1h",)} <= set(tables)
        bucket = int(datetime(2026, 11, 26, 10, 0, tzinfo=UTC).timestamp())
        acc = Acc()
        for v in (1.0, 2.0, 3.0):
            acc.add(v, "u1")
        flush = Flush(0, 42, bucket + 30, [RollupRow(bucket, "click", "web", 0, acc, False)], [], [], [])
        rollup_store.write_flush(conn, "events", flush)
        rollup_store.write_flush(conn, "events", flush)  # a replay overwrites
        assert conn.execute("select event_count, value_sum from rollup_1m").fetchall() == [(3, 6.0)]
        offset, watermark, cells = rollup_store.load_partition(conn, "events", 0, 300)
        assert offset == 42 and watermark == bucket + 30 and cells[(60, (bucket, "click", "web"))].count == 3
        conn.execute("drop table rollup_1m")
        conn.execute("drop table rollup_1h")
        conn.execute("drop table stream_offsets")
