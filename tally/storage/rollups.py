"""Writing and reading minute rollups in PostgreSQL/TimescaleDB."""

from __future__ import annotations

from datetime import UTC, datetime

import msgspec
import psycopg
from psycopg.types.json import Jsonb

from tally.rollup import BUCKET_S, HOUR_S, Acc, Flush, Key, bucket_of
from tally.settings import REPO_ROOT, Settings
from tally.sketch import Hll

SCHEMA = REPO_ROOT / "tally" / "schema" / "postgres.sql"
SCHEMA_LOCK = 0x7461_6C6C  # "tall": any constant shared by every process applying the schema

TABLES = {60: "rollup_1m", 3600: "rollup_1h"}

_COLUMNS = (
    "bucket, event_type, source, kafka_partition, event_count, value_count, value_sum, value_min, value_max,"
    " users, final"
)
# Rows arrive by COPY into a temporary table and are merged with one statement: row-by-row
# upserts managed ~24 K rows/s, COPY ~150 K (the benchmark with 10,000 active keys needs 20 K+).
_STAGE = f"""
create temporary table if not exists flush_rows as
select {_COLUMNS} from rollup_1m with no data
"""
_MERGE = f"""
insert into {{table}} ({_COLUMNS}, updated_at)
select {_COLUMNS}, now() from flush_rows
on conflict (event_type, source, bucket, kafka_partition) do update set
    event_count = excluded.event_count, value_count = excluded.value_count,
    value_sum = excluded.value_sum, value_min = excluded.value_min, value_max = excluded.value_max,
    users = excluded.users, final = excluded.final, updated_at = excluded.updated_at
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


def write_flush(conn: psycopg.Connection, topic: str, flush: Flush, use_copy: bool = True) -> None:
    """Overwrite the partition's changed rows and move its offset, atomically.

    `use_copy=False` stages rows with INSERTs instead, for servers without COPY FROM STDIN (the
    PGlite TimescaleDB conformance target); the merge into the rollup tables is the same."""
    by_table: dict[str, list[tuple]] = {}
    for r in flush.rows:
        a = r.acc
        by_table.setdefault(TABLES[r.width], []).append(
            (
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
        )
    watermark = datetime.fromtimestamp(flush.watermark, UTC) if flush.watermark is not None else None
    with conn.transaction(), conn.cursor() as cur:
        if by_table:
            cur.execute(_STAGE)
        for table, params in by_table.items():
            cur.execute("truncate flush_rows")
            if use_copy:
                with cur.copy(f"copy flush_rows ({_COLUMNS}) from stdin") as copy:
                    for row in params:
                        copy.write_row(row)
            else:
                cur.executemany(f"insert into flush_rows ({_COLUMNS}) values ({', '.join(['%s'] * 11)})", params)
            cur.execute(_MERGE.format(table=table))
        if flush.late:
            cur.executemany(
                _LATE,
                [
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
                    for e, pos in zip(flush.late, flush.late_positions or [None] * len(flush.late), strict=True)
                ],
            )
        cur.execute(_OFFSET, (topic, flush.partition, flush.next_offset, watermark))


def load_partition(
    conn: psycopg.Connection, topic: str, partition: int, allowed_lateness_s: int
) -> tuple[int | None, int | None, dict[tuple[int, Key], Acc]]:
    """Where a partition resumes: (next offset, watermark, open cells by (width, key)) as last
    committed. Open minutes are their rows; an open hour has no row yet and is the sum of its
    minutes' rows, final or not."""
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
    for bucket, et, src, cnt, vc, vs, vmin, vmax, users, final in conn.execute(
        "select bucket, event_type, source, event_count, value_count, value_sum, value_min, value_max, users, final"
        " from rollup_1m where kafka_partition = %s and (not final or bucket >= %s)",
        (partition, since),
    ):
        minute = int(bucket.timestamp())
        acc = Acc(cnt, vc, vs, vmin, vmax, Hll.from_bytes(bytes(users)))
        if not final:
            cells[(BUCKET_S, (minute, et, src))] = acc
        hour = minute - minute % HOUR_S
        if hour + HOUR_S + allowed_lateness_s > wm:
            cells.setdefault((HOUR_S, (hour, et, src)), Acc()).merge(acc)  # merge leaves `acc` as it is
    return next_offset, wm, cells
