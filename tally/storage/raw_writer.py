"""Writing raw events to Cassandra: one chunk row per (event_type, second) of a flush, or per
(event_type, 10 s window) for types with few events a second, in bounded pieces, small ones in
unlogged batches; idempotent, so a replay overwrites instead of adding."""

from __future__ import annotations

import time
from collections.abc import Iterator
from itertools import chain, islice
from operator import lt

from tally.flush import RawBatch
from tally.settings import Settings
from tally.storage.raw_events import DELETE_CHUNK, INSERT_CHUNK, chunk_key, narrow_slot, wide_slot

# A chunk row holds at most this much. Pieces are cut at the same events whenever the same flush is
# written again, and a restarted partition cuts its flushes where they ended before (tally.dedup).
# Only with dedup off can a replay cut elsewhere leave a stale tail piece, whose events the reader
# returns once (it drops repeats of the same event_id and time); a flush with refused events is
# `forget`-ed before it is read again without them.
PIECE_EVENTS = 2000
PIECE_BYTES = 1 << 20
# Small rows are sent in unlogged batches of at most this much (under cassandra.yaml's
# batch_size_fail_threshold). With one node every partition is local; on a cluster, batches would
# be grouped by replica.
BATCH_BYTES = 256 << 10
BATCH_ROWS = 200
# Below this many events a second on average (over the seconds of its window that a flush holds), an
# event type's events of that window go in one wide row (tally.storage.raw_events). The decision
# depends only on the flush's events, so a replayed flush writes the same rows again. A reader's
# newest page of such a type reads at most a window's rows: under SPARSE_PER_S x 10 events a flush.
SPARSE_PER_S = 32


class RefusedRows(Exception):
    """Cassandra refused some chunk rows for what they hold (retrying cannot help) and took the
    rest: {stream position of each event in a refused row: the reason}."""

    def __init__(self, positions: dict[int, str]):
        super().__init__(f"Cassandra refused {len(positions)} events")
        self.positions = positions


class RawEventWriter:
    def __init__(self, session, settings: Settings):
        self.session = session
        self.ttl = settings.raw_ttl_s
        self.insert = session.prepare(INSERT_CHUNK)
        self.delete = session.prepare(DELETE_CHUNK)

    def write(self, raw: RawBatch, shard: int) -> int:
        """Write events as one chunk row per (event_type, second), split into bounded pieces.
        Raises RefusedRows if Cassandra refused some rows for their content and took the others,
        or the error of a write that kept failing otherwise (also when it refused every row: that
        is a table or a setting gone wrong, not the data, and is waited out like an outage)."""
        from cassandra import InvalidRequest

        statements, rows = self._statements(raw, shard)
        total = sum(map(len, rows))
        refused: dict[int, str] = {}
        refused_rows = 0
        # Large rows fill the socket's send buffer, and the driver then fails further requests at
        # once (ConnectionBusy) instead of queueing them: retry just those, soon. Rows are
        # idempotent, so a retry rewrites the same data; a longer outage raises to the caller.
        for attempt in range(8):
            failed = []
            for i, error in self._run(statements):
                if isinstance(error, InvalidRequest):
                    found, n = self._isolate(rows[i])
                    refused.update(found)
                    refused_rows += n
                    if refused_rows == total:
                        raise error
                else:
                    failed.append((i, error))
            if not failed:
                if refused:
                    raise RefusedRows(refused)
                return len(raw)
            statements = [statements[i] for i, _e in failed]
            rows = [rows[i] for i, _e in failed]
            time.sleep(0.02 * 2**attempt)
        raise failed[0][1]

    def forget(self, raw: RawBatch, shard: int) -> None:
        """Delete the chunk rows `write` makes of this batch: before a flush with refused events is
        read again, which cuts its pieces elsewhere (the refused ones left out), so that no row of
        the first cut stays behind with a refused event or a second copy of the others."""
        from cassandra.concurrent import execute_concurrent_with_args

        _statements, rows = self._statements(raw, shard)
        keys = [row[:5] for group in rows for row, _positions in group]
        for ok, result in execute_concurrent_with_args(self.session, self.delete, keys, concurrency=32):
            if not ok:
                raise result

    def _statements(self, raw: RawBatch, shard: int) -> tuple[list, list[list[tuple]]]:
        """(statement, params or None) pairs, and the rows each carries as (params, positions)."""
        statements, rows = [], []
        batch, batch_bytes, batch_rows = None, 0, []
        for event_type, slot_us, positions, lines in _rows(raw):
            hour, slot = chunk_key(slot_us)
            for start, end in _pieces(lines):
                body = b"[" + b",".join(lines[start:end]) + b"]"
                row = (event_type, hour, shard, slot, positions[start], body, self.ttl)
                held = (row, positions[start:end])
                if len(body) >= BATCH_BYTES:
                    statements.append((self.insert, row))
                    rows.append([held])
                    continue
                # Thousands of event types each write a small row per flush: one request per row
                # spent most of the dataflow's CPU in the driver's Python I/O thread (py-spy). Small
                # rows go in unlogged batches instead: one request, the same idempotent rows.
                if batch is None or batch_bytes + len(body) > BATCH_BYTES or len(batch) >= BATCH_ROWS:
                    batch, batch_bytes, batch_rows = self._batch(), 0, []
                    statements.append((batch, None))
                    rows.append(batch_rows)
                batch.add(self.insert, row)
                batch_rows.append(held)
                batch_bytes += len(body)
        return statements, rows

    def _run(self, statements: list) -> list[tuple[int, Exception]]:
        from cassandra.concurrent import execute_concurrent

        results = execute_concurrent(self.session, statements, concurrency=16, raise_on_first_error=False)
        return [(i, result) for i, (ok, result) in enumerate(results) if not ok]

    def _isolate(self, rows: list[tuple]) -> tuple[dict[int, str], int]:
        """A refused request, row by row: ({position: reason} of the events in refused rows, how
        many rows were refused). A batch may be refused for one row, or for being a batch."""
        from cassandra import InvalidRequest

        refused: dict[int, str] = {}
        n = 0
        for row, positions in rows:
            try:
                self.session.execute(self.insert, row)
            except InvalidRequest as e:
                refused.update(dict.fromkeys(positions, f"refused by Cassandra: {e}"))
                n += 1
        return refused, n

    @staticmethod
    def _batch():
        from cassandra.query import BatchStatement, BatchType

        return BatchStatement(batch_type=BatchType.UNLOGGED)


def _rows(raw: RawBatch) -> Iterator[tuple[str, int, list[int], list[bytes]]]:
    """(event_type, slot in us, positions, lines) of each chunk row, before it is cut into pieces: a
    narrow row per second of a busy type's window, one wide row for a sparse one, its events in
    stream order (a piece's first_offset is its first position: tally.storage.late_copies)."""
    windows: dict[tuple[str, int], list[int]] = {}
    for event_type, second in raw.chunks:
        windows.setdefault((event_type, wide_slot(second)), []).append(second)
    chunks = raw.chunks
    for (event_type, wide), seconds in windows.items():
        held = [chunks[(event_type, second)] for second in seconds]
        if sum(len(positions) for positions, _lines in held) >= SPARSE_PER_S * len(seconds):
            for second, (positions, lines) in zip(seconds, held, strict=True):
                yield event_type, narrow_slot(second), positions, lines
        elif len(held) == 1:
            yield event_type, wide, *held[0]
        else:
            positions = list(chain.from_iterable(p for p, _lines in held))
            lines = list(chain.from_iterable(lines for _p, lines in held))
            # Each second's events are in stream order, and the seconds mostly follow each other in
            # it too (half the windows at 10,000 keys): sorted only when not, by position alone.
            if not all(map(lt, positions, islice(positions, 1, None))):
                order = sorted(range(len(positions)), key=positions.__getitem__)
                positions = list(map(positions.__getitem__, order))
                lines = list(map(lines.__getitem__, order))
            yield event_type, wide, positions, lines


def _pieces(lines: list[bytes]) -> Iterator[tuple[int, int]]:
    """Split a chunk into [start, end) ranges so no row passes PIECE_EVENTS events or PIECE_BYTES
    (Cassandra refuses a mutation over half a commit-log segment; a replayed backlog of one second
    can be huge)."""
    if len(lines) <= PIECE_EVENTS and sum(map(len, lines)) + len(lines) <= PIECE_BYTES:
        yield 0, len(lines)
        return
    start = size = 0
    for i, line in enumerate(lines):
        if i > start and (i - start == PIECE_EVENTS or size + len(line) > PIECE_BYTES):
            yield start, i
            start, size = i, 0
        size += len(line) + 1
    yield start, len(lines)
