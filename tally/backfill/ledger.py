"""The backfill ledger in PostgreSQL: which runs exist, which of their chunks are committed (with
their counts), and the rows each rejected, row number, field and reason.

A chunk's ledger row is written in the transaction that adds its rollups, so a chunk is either
wholly in the rollups and marked done, or neither: a rerun of the same input skips what is done and
redoes the rest. A run is known by its identity (the inputs and how they are read), so running the
same thing twice finds the first run's chunks and changes nothing.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import psycopg

# Raw chunk rows written by a backfill carry a stream position like the stream's own
# (tally.flush.position), negative so the two never meet: BASE + (run << 43 | chunk << 20 | line).
# Rising in input order, and telling which run and chunk wrote a row.
BASE = -(1 << 62)
CHUNK_BITS = 23
LINE_BITS = 20
MAX_CHUNK_ROWS = 1 << LINE_BITS
MAX_RUNS = 1 << (62 - CHUNK_BITS - LINE_BITS)
RUN_LOCK = 0x7462  # advisory lock space of runs in progress: (RUN_LOCK, run_id)
LOCK_WAIT_S = 5.0


def position(run_id: int, chunk: int, line: int) -> int:
    return BASE + ((run_id << CHUNK_BITS | chunk) << LINE_BITS | line)


def writer_of(pos: int) -> tuple[int, int] | None:
    """(run, chunk) of a backfill's raw row position; None for the stream's own."""
    if pos >= 0:
        return None
    rel = pos - BASE
    return rel >> (CHUNK_BITS + LINE_BITS), (rel >> LINE_BITS) & ((1 << CHUNK_BITS) - 1)


@dataclass
class Counts:
    rows: int = 0
    stored: int = 0  # aggregated and stored here, in hours the stream has closed
    via_stream: int = 0  # handed to the stream (Kafka) for hours it has not closed
    duplicates: int = 0
    rejected: int = 0

    def __iadd__(self, other: Counts) -> Counts:
        self.rows += other.rows
        self.stored += other.stored
        self.via_stream += other.via_stream
        self.duplicates += other.duplicates
        self.rejected += other.rejected
        return self

    def line(self) -> str:
        return (
            f"rows read {self.rows:,}, stored {self.stored + self.via_stream:,}"
            f" ({self.stored:,} directly, {self.via_stream:,} through the stream),"
            f" duplicates {self.duplicates:,}, rejected {self.rejected:,}"
        )


@dataclass
class Run:
    run_id: int
    chunk_rows: int
    done: dict[int, Counts]  # committed chunks


def start(conn: psycopg.Connection, identity: str, label: str, chunk_rows: int) -> Run:
    """The run of this identity, made if new; an existing one keeps its chunk size (its chunks are
    numbered by it)."""
    with conn.transaction():
        conn.execute(
            "insert into backfill_runs (identity, label, chunk_rows) values (%s, %s, %s)"
            " on conflict (identity) do nothing",
            (identity, label, chunk_rows),
        )
        run_id, size = conn.execute(
            "select run_id, chunk_rows from backfill_runs where identity = %s", (identity,)
        ).fetchone()
        done = {
            chunk: Counts(*counts)
            for chunk, *counts in conn.execute(
                "select chunk, rows_read, stored, via_stream, duplicates, rejected from backfill_chunks"
                " where run_id = %s",
                (run_id,),
            )
        }
    if run_id >= MAX_RUNS:
        raise RuntimeError(f"backfill run ids are exhausted ({MAX_RUNS})")
    # Held while this connection lives: a second process loading the same input at the same time
    # would take this one's uncommitted raw rows for leftovers and delete them. Tried for a few
    # seconds: the server ends the session of a run that just stopped a moment after its client.
    deadline = time.monotonic() + LOCK_WAIT_S
    while not conn.execute("select pg_try_advisory_lock(%s, %s)", (RUN_LOCK, run_id)).fetchone()[0]:
        if time.monotonic() > deadline:
            raise RuntimeError(f"backfill run {run_id} ({label}) is already running in another process")
        time.sleep(0.2)
    return Run(run_id, size, done)


def commit_chunk(
    conn: psycopg.Connection, run_id: int, chunk: int, counts: Counts, rejects: list[tuple[int, str | None, str]]
) -> None:
    """Inside the chunk's transaction: its counts and its rejected rows (row, field, reason)."""
    conn.execute(
        "insert into backfill_chunks (run_id, chunk, rows_read, stored, via_stream, duplicates, rejected)"
        " values (%s, %s, %s, %s, %s, %s, %s)",
        (run_id, chunk, counts.rows, counts.stored, counts.via_stream, counts.duplicates, counts.rejected),
    )
    if rejects:
        with conn.cursor() as cur, cur.copy("copy backfill_rejects (run_id, row_no, field, reason) from stdin") as copy:
            for row, field, reason in rejects:
                copy.write_row((run_id, row, _text(field), _text(reason)))


def finish(conn: psycopg.Connection, run_id: int) -> None:
    conn.execute("update backfill_runs set finished_at = now() where run_id = %s", (run_id,))


def rejects(conn: psycopg.Connection, run_id: int, limit: int | None = None) -> list[tuple[int, str | None, str]]:
    return conn.execute(
        "select row_no, field, reason from backfill_rejects where run_id = %s order by row_no limit %s",
        (run_id, limit),
    ).fetchall()


def watermarks(conn: psycopg.Connection, topic: str) -> dict[int, int]:
    """Each partition's committed event-time watermark (epoch s): what the stream has closed."""
    return {
        p: int(wm.timestamp())
        for p, wm in conn.execute(
            "select kafka_partition, watermark from stream_offsets where topic = %s and watermark is not null",
            (topic,),
        )
    }


def _text(value: str | None) -> str | None:
    """PostgreSQL text cannot hold U+0000; a reason quoting the input is cut to a readable length."""
    return None if value is None else value.replace("\x00", "\ufffd")[:1000]
