"""Rollup rows in PostgreSQL/TimescaleDB: a flush written with its offset, a partition read back,
one row upserted, cells added to closed rows (the correction step, backfills), and which parts of
a flush the database refuses."""

from __future__ import annotations

from datetime import UTC, datetime

import msgspec
import psycopg
from psycopg.pq import TransactionStatus
from psycopg.types.json import Jsonb

from tally.cells import BUCKET_S, HOUR_S, Acc, Key, RollupRow, bucket_of, hour_of
from tally.flush import Flush
from tally.settings import REPO_ROOT, Settings
from tally.sketch import Hll

SCHEMA = REPO_ROOT / "tally" / "schema" / "postgres.sql"
SCHEMA_LOCK = 0x7461_6C6C  # "tall": any constant shared by every process applying the schema

TABLES = {60: "rollup_1m", 3600: "rollup_1h"}

KEY = "bucket, event_type, source, kafka_partition"
VALUES = "event_count, value_count, value_sum, value_min, value_max, users"
_COLUMNS = f"{KEY}, {VALUES}, final"
_SET = """
    event_count = excluded.event_count, value_count = excluded.value_count,
    value_sum = excluded.value_sum, value_min = excluded.value_min, value_max = excluded.value_max,
    users = excluded.users, final = excluded.final, updated_at = excluded.updated_at
"""
# Rows arrive by COPY into a temporary table and are merged with one statement: row-by-row
# upserts managed ~24 K rows/s, COPY ~150 K (the benchmark with 10,000 active keys needs 20 K+).
_STAGE = f"""
create temporary table if not exists flush_rows as
select {_COLUMNS} from rollup_1m with no data
"""
_MERGE = f"""
insert into {{table}} ({_COLUMNS}, updated_at)
select {_COLUMNS}, now() from flush_rows
on conflict (event_type, source, bucket, kafka_partition) do update set {_SET}
"""
_UPSERT = f"""
insert into {{table}} ({_COLUMNS}, updated_at) values ({", ".join(["%s"] * 11)}, now())
on conflict (event_type, source, bucket, kafka_partition) do update set {_SET}
"""
# Held by whoever adds to closed rows until its transaction ends (backfills side by side, the
# correction step): a row lock cannot cover a row not there yet, and two writers inserting the same
# new row would each write their own cell over the other's.
ADD_LOCK = 0x7461_6C61
# The rows of the staged keys, read for the addition.
_HELD = f"""
select r.bucket, r.event_type, r.source, r.kafka_partition, {", ".join("r." + c.strip() for c in VALUES.split(","))}
from {{table}} r join flush_rows f using (bucket, event_type, source, kafka_partition)
"""

_LATE = """
insert into late_events (event_id, bucket, event_type, source, kafka_partition, event, position, watermark)
values (%s, %s, %s, %s, %s, %s, %s, %s)
on conflict (event_id) do nothing
"""

_OFFSET = """
insert into stream_offsets (topic, kafka_partition, next_offset, watermark, updated_at)
values (%s, %s, %s, %s, now())
on conflict (topic, kafka_partition) do update set
    next_offset = excluded.next_offset, watermark = excluded.watermark, updated_at = excluded.updated_at
"""


def connect(settings: Settings, **kwargs) -> psycopg.Connection:
    return psycopg.connect(settings.pg_dsn, **kwargs)


def apply_schema(conn: psycopg.Connection) -> None:
    # Several dataflow processes start at once; concurrent `create ... if not exists` can still collide.
    with conn.transaction():
        conn.execute("select pg_advisory_xact_lock(%s)", (SCHEMA_LOCK,))
        conn.execute(SCHEMA.read_text())


def bump_revision(conn: psycopg.Connection) -> None:
    """Call inside the transaction that rewrites final buckets, so cached answers are dropped."""
    conn.execute("update rollup_revision set revision = revision + 1")


def acc_of(count, value_count, value_sum, value_min, value_max, users) -> Acc:
    """A cell from its row's value columns (VALUES), as PostgreSQL returns them."""
    return Acc(count, value_count, value_sum, value_min, value_max, Hll.from_bytes(bytes(users)))


def row_params(r: RollupRow) -> tuple:
    """A row's columns in _COLUMNS order."""
    a = r.acc
    return (
        r.bucket_time,
        r.event_type,
        r.source,
        r.partition,
        a.count,
        a.value_count,
        a.value_sum,
        a.value_min,
        a.value_max,
        a.users.to_bytes(),
        r.final,
    )


def add_rows(conn: psycopg.Connection, rows: list[RollupRow]) -> None:
    """Add each row's cell to what its row holds (or write it, if there is none), inside the
    caller's transaction, which holds ADD_LOCK from here to its end. For buckets the stream has
    closed and never writes again: the correction step's late events and backfills. What is there
    comes first in each sum, as the stream would have added the newcomers after it."""
    by_width: dict[int, list[RollupRow]] = {}
    for r in rows:
        by_width.setdefault(r.width, []).append(r)
    with conn.cursor() as cur:
        if by_width:
            cur.execute("select pg_advisory_xact_lock(%s)", (ADD_LOCK,))
            cur.execute(_STAGE)
        for width, group in by_width.items():
            table = TABLES[width]
            cur.execute("truncate flush_rows")
            stage_rows(cur, [row_params(r) for r in group])
            held = {(b, et, src, p): acc_of(*v) for b, et, src, p, *v in cur.execute(_HELD.format(table=table))}
            merged = []
            for r in group:
                acc = held.get((r.bucket_time, r.event_type, r.source, r.partition))
                if acc is not None:
                    acc.merge(r.acc)
                    r = RollupRow(r.bucket, r.event_type, r.source, r.partition, acc, r.final, r.width)
                merged.append(row_params(r))
            cur.execute("truncate flush_rows")
            stage_rows(cur, merged)
            cur.execute(_MERGE.format(table=table))


def upsert_row(conn: psycopg.Connection, row: RollupRow) -> None:
    conn.execute(_UPSERT.format(table=TABLES[row.width]), row_params(row))


def write_flush(conn: psycopg.Connection, topic: str, flush: Flush) -> None:
    """Overwrite the partition's changed rows and move its offset, atomically."""
    by_table: dict[str, list[tuple]] = {}
    for r in flush.rows:
        by_table.setdefault(TABLES[r.width], []).append(row_params(r))
    with conn.transaction(), conn.cursor() as cur:
        if by_table:
            cur.execute(_STAGE)
        for table, params in by_table.items():
            cur.execute("truncate flush_rows")
            stage_rows(cur, params)
            cur.execute(_MERGE.format(table=table))
        if flush.late:
            cur.executemany(_LATE, _late_params(flush))
        cur.execute(_OFFSET, (topic, flush.partition, flush.next_offset, _watermark(flush)))


def stage_rows(cur: psycopg.Cursor, params: list[tuple]) -> None:
    with cur.copy(f"copy flush_rows ({_COLUMNS}) from stdin") as copy:
        for row in params:
            copy.write_row(row)


def refused_parts(conn: psycopg.Connection, topic: str, flush: Flush) -> tuple[list[tuple[RollupRow, str]], dict]:
    """Which rows of a flush PostgreSQL refuses, each tried alone in a savepoint, all rolled back:
    (refused rollup rows with the reason, {position of a refused late event: reason}). Only called
    after the whole flush was refused, so its cost does not matter."""
    rows: list[tuple[RollupRow, str]] = []
    late: dict[int, str] = {}
    try:
        with conn.transaction(force_rollback=True):
            for r in flush.rows:
                try:
                    with conn.transaction():
                        upsert_row(conn, r)
                except (psycopg.DataError, psycopg.IntegrityError) as e:
                    rows.append((r, str(e)))
            for params in _late_params(flush):
                try:
                    with conn.transaction():
                        conn.execute(_LATE, params)
                except (psycopg.DataError, psycopg.IntegrityError) as e:
                    late[params[6]] = str(e)
            conn.execute(_OFFSET, (topic, flush.partition, flush.next_offset, _watermark(flush)))
    except psycopg.Error:
        conn.close()
        raise
    return rows, late


def _watermark(flush: Flush) -> datetime | None:
    return datetime.fromtimestamp(flush.watermark, UTC) if flush.watermark is not None else None


def _late_params(flush: Flush) -> list[tuple]:
    watermark = _watermark(flush)
    positions = flush.late_positions or [None] * len(flush.late)
    return [
        (
            e.event_id,
            datetime.fromtimestamp(bucket_of(e.timestamp.timestamp()), UTC),
            e.event_type,
            e.source,
            flush.partition,
            Jsonb(msgspec.to_builtins(e)),
            pos,
            watermark,
        )
        for e, pos in zip(flush.late, positions, strict=True)
    ]


def whole_until(conn: psycopg.Connection, topic: str, partition: int) -> int:
    """The offset up to which every flush of the partition commits (0: none recorded)."""
    row = conn.execute(
        "select whole_until from stream_offsets where topic = %s and kafka_partition = %s", (topic, partition)
    ).fetchone()
    return row[0] if row is not None and row[0] is not None else 0


def commit_every_flush_until(conn: psycopg.Connection, topic: str, partition: int, offset: int) -> None:
    conn.execute(
        "update stream_offsets set whole_until = greatest(coalesce(whole_until, 0), %s)"
        " where topic = %s and kafka_partition = %s",
        (offset, topic, partition),
    )


def load_partition(
    conn: psycopg.Connection, topic: str, partition: int, allowed_lateness_s: int
) -> tuple[int | None, int | None, dict[tuple[int, Key], Acc]]:
    """Where a partition resumes: (next offset, watermark, open cells by (width, key)) as last
    committed. Open minutes are their rows; an open hour has no row yet and is its final minutes'
    rows merged in minute order, as the dataflow merged them (tally.aggregator.PartitionAggregator).

    The offset and the rows are read in one snapshot: a killed process's last commit can still land
    while its successor loads, and an offset read before it with rows read after it would replay
    that commit's events on top of its rows."""
    outside = conn.info.transaction_status == TransactionStatus.IDLE
    with conn.transaction():
        if outside:  # within a caller's transaction, the caller's isolation holds
            conn.execute("set transaction isolation level repeatable read")
        return _load_partition(conn, topic, partition, allowed_lateness_s)


def _load_partition(
    conn: psycopg.Connection, topic: str, partition: int, allowed_lateness_s: int
) -> tuple[int | None, int | None, dict[tuple[int, Key], Acc]]:
    row = conn.execute(
        "select next_offset, watermark from stream_offsets where topic = %s and kafka_partition = %s",
        (topic, partition),
    ).fetchone()
    if row is None:
        return None, None, {}
    next_offset, watermark = row
    cells: dict[tuple[int, Key], Acc] = {}
    if watermark is None:
        return next_offset, None, cells
    wm = int(watermark.timestamp())
    # Hours still open end after wm - lateness; their first minute is at most an hour before that.
    since = datetime.fromtimestamp(wm - allowed_lateness_s - 2 * HOUR_S, UTC)
    for bucket, et, src, *values, final in conn.execute(
        f"select bucket, event_type, source, {VALUES}, final from rollup_1m"
        " where kafka_partition = %s and (not final or bucket >= %s) order by bucket",
        (partition, since),
    ):
        minute = int(bucket.timestamp())
        acc = acc_of(*values)
        if not final:
            # A minute closes in the flush that writes it final; one still open here although the
            # watermark closed it was left out when PostgreSQL refused its row (dataflows.
            # commit_sink), or belongs to another topic's stream: reopened, it would close at once
            # into an hour of its own and overwrite the right one.
            if minute + BUCKET_S + allowed_lateness_s > wm:
                cells[(BUCKET_S, (minute, et, src))] = acc
            continue
        hour = hour_of(minute)
        if hour + HOUR_S + allowed_lateness_s > wm:
            cells.setdefault((HOUR_S, (hour, et, src)), Acc()).merge(acc)
    return next_offset, wm, cells
