"""The backfill: history into Tally through the stream's own code, so history and live data cannot
disagree.

Rows are read in chunks (tally.backfill.sources) and each chunk is:
1. validated by the ingest's decoder (tally.events.decode): a row it refuses is a reject, kept with
   its row number, field and reason, never dropped silently;
2. deduplicated by event_id: against the rows before it in the same input, and against what raw
   storage already holds in the event's (type, hour, partition);
3. split by what the stream has closed. An event whose hour its Kafka partition has closed (by the
   watermark committed with its rollups), and that is older than the dedup horizon there, is added
   here: aggregated by the stream's aggregator (tally.aggregator) into the same cells, its raw event
   written by the stream's writer (tally.storage.raw_writer), its minute and hour rows added to in
   PostgreSQL. Any other event goes to Kafka like an ingested one: the stream aggregates it (or
   ledgers it late for the correction step) and its dedup store sees it;
4. committed, a few chunks together (`backfill_commit_rows`): their raw events written, then their
   rollup additions and ledger rows in one transaction (tally.backfill.ledger). Stream events are
   in Kafka before their chunk is counted.

A crash anywhere redoes at most the chunks since the last commit: raw rows are rewritten under the same keys
(their positions name the run, chunk and row), rollups were not added, Kafka copies are caught by
the stream's dedup. A second run of the same input finds every chunk committed and changes nothing.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import msgspec
import psycopg

from tally.aggregator import PartitionAggregator
from tally.backfill import ledger, sources, stored_ids
from tally.backfill.ledger import Counts
from tally.cells import HOUR_S, Acc, RollupRow, hour_of
from tally.events.decode import decode_messages
from tally.events.schema import encode_event
from tally.flush import RawBatch, seconds_of
from tally.producer import group_messages, partition_of
from tally.runtime import tune_gc
from tally.settings import Settings
from tally.storage import raw_events, raw_writer, rollup_store

# Lines longer than this go to Kafka re-encoded, as the API sends them (tally.api.routes.events).
MAX_LINE_AS_SENT = 64 * 1024
_NEVER_CLOSES = 1 << 40  # the backfill's aggregators hold every cell of a chunk open


@dataclass
class Progress:
    counts: Counts = field(default_factory=Counts)
    skipped_chunks: int = 0  # committed by an earlier run of the same input
    seconds: float = 0.0

    @property
    def rate(self) -> float:
        return self.counts.rows / self.seconds if self.seconds else 0.0


class Backfill:
    def __init__(self, settings: Settings, identity: str, label: str, chunk_rows: int | None = None):
        self.settings = settings
        self.partitions = settings.kafka_partitions
        # Autocommit, so each `transaction()` block below is a transaction of its own (without it, the
        # first plain select would open one that every later block only nests a savepoint in).
        self.pg = rollup_store.connect(settings, autocommit=True)
        try:
            self.run = ledger.start(
                self.pg, identity, label, min(chunk_rows or settings.backfill_chunk_rows, ledger.MAX_CHUNK_ROWS)
            )
        except BaseException:
            self.pg.close()
            raise
        self.cluster = raw_events.cluster(settings)
        session = self.cluster.connect(settings.cassandra_keyspace)
        self.raw = raw_writer.RawEventWriter(session, settings)
        self.stored = stored_ids.StoredIds(session, self.run.run_id)
        self.seen: set[str] = set()
        self._producer = None
        # What the chunks read since the last commit add up to: open cells and raw events per
        # partition, and each chunk's ledger row.
        self._cells: dict[int, PartitionAggregator] = {}
        self._raw: dict[int, RawBatch] = {}
        self._chunks: list[tuple[int, Counts, list]] = []
        self._pending_rows = 0
        tune_gc()  # the stream's collector setting: a backfill allocates like it, chunk by chunk

    @property
    def run_id(self) -> int:
        return self.run.run_id

    def load(self, rows: Iterator[bytes | str], on_chunk: Callable[[Progress], None] | None = None) -> Progress:
        """Every chunk of `rows` not committed yet, at most `backfill_max_events_per_s` rows a second
        (0: as fast as it goes), so the live stream keeps its share of the machine."""
        progress = Progress()
        limit = self.settings.backfill_max_events_per_s
        t0 = time.monotonic()
        for block in sources.blocks(rows, self.run.chunk_rows):
            chunk = block.first // self.run.chunk_rows
            done = self.run.done.get(chunk)
            if done is not None:
                progress.counts += done
                progress.skipped_chunks += 1
            else:
                progress.counts += self._chunk(chunk, block)
                if self._pending_rows >= self.settings.backfill_commit_rows:
                    self._commit()
                if limit:
                    ahead = progress.counts.rows / limit - (time.monotonic() - t0)
                    if ahead > 0:
                        time.sleep(ahead)
            progress.seconds = time.monotonic() - t0
            if on_chunk is not None:
                on_chunk(progress)
        self._commit()
        progress.seconds = time.monotonic() - t0
        with self.pg.transaction():
            ledger.finish(self.pg, self.run.run_id)
        return progress

    def _commit(self) -> None:
        """The pending chunks made durable: their raw events, then their rollups with their ledger
        rows in one transaction. Chunks of history at a busy time touch the same cells again and
        again (at 10,000 keys a minute, a 50,000-row chunk holds ~1 event a cell): added up here
        first, each cell is read and written once a commit instead of once a chunk."""
        if not self._chunks:
            return
        rows: list[RollupRow] = []
        for p, agg in sorted(self._cells.items()):
            minutes = sorted(agg.flush(0).rows, key=lambda r: (r.bucket, r.event_type, r.source))
            hours: dict[tuple, Acc] = {}
            for r in minutes:
                r.final = True
                key = (hour_of(r.bucket), r.event_type, r.source)
                hour = hours.get(key)
                if hour is None:
                    hour = hours[key] = Acc()
                hour.merge(r.acc)
            rows += minutes
            rows += [RollupRow(h, et, src, p, acc, True, HOUR_S) for (h, et, src), acc in hours.items()]
        for p, batch in sorted(self._raw.items()):
            self.raw.write(batch, shard=p)
        with self.pg.transaction():
            rollup_store.add_rows(self.pg, rows)
            if rows:
                rollup_store.bump_revision(self.pg)
            for chunk, counts, rejects in self._chunks:
                ledger.commit_chunk(self.pg, self.run.run_id, chunk, counts, rejects)
        self._cells, self._raw, self._chunks, self._pending_rows = {}, {}, [], 0

    def _chunk(self, chunk: int, block: sources.Block) -> Counts:
        counts = Counts(rows=len(block.lines))
        rejects: list[tuple[int, str | None, str]] = []
        rows_of_lines: list[int] = []
        lines: list[bytes] = []
        for i, line in enumerate(block.lines):
            if isinstance(line, str):
                rejects.append((block.first + i, None, line))
            else:
                rows_of_lines.append(i)
                lines.append(line)
        not_after = datetime.now(UTC) + timedelta(seconds=self.settings.max_ahead_s)
        events, errors = decode_messages(lines, not_after)
        bad = set()
        for e in errors:
            bad.add(e.index)
            rejects.append((block.first + rows_of_lines[e.index], e.field, e.message))
        if bad:
            keep = [i for i in range(len(lines)) if i not in bad]
            lines = [lines[i] for i in keep]
            rows_of_lines = [rows_of_lines[i] for i in keep]
        counts.rejected = len(rejects)

        direct: list[int] = []
        stream: list[int] = []
        marks = ledger.watermarks(self.pg, self.settings.events_topic)
        seconds = seconds_of(events)
        for i, (e, second) in enumerate(zip(events, seconds, strict=True)):
            if e.event_id in self.seen:
                counts.duplicates += 1
                continue
            self.seen.add(e.event_id)
            (direct if self._closed(marks.get(partition_of(e.event_id, self.partitions)), second) else stream).append(i)

        fresh = self._not_stored(chunk, events, seconds, direct)
        counts.duplicates += len(direct) - len(fresh)
        self._to_stream(events, lines, stream)
        self._aggregate(chunk, events, seconds, lines, rows_of_lines, fresh)
        counts.stored, counts.via_stream = len(fresh), len(stream)
        self._chunks.append((chunk, counts, rejects))
        self._pending_rows += counts.rows
        return counts

    def _closed(self, watermark: int | None, second: int) -> bool:
        """Whether the stream has closed this event's hour in its partition and forgotten ids as old
        (so no copy of it can still be caught by its dedup store)."""
        s = self.settings
        return (
            watermark is not None
            and hour_of(second) + HOUR_S + s.allowed_lateness_s <= watermark
            and second < watermark - s.dedup_horizon_s
        )

    def _not_stored(self, chunk: int, events, seconds: list[int], direct: list[int]) -> list[int]:
        keys = {
            (events[i].event_type, hour_of(seconds[i]), partition_of(events[i].event_id, self.partitions))
            for i in direct
        }
        self.stored.load(keys, chunk)
        fresh = []
        for i in direct:
            e = events[i]
            key = (e.event_type, hour_of(seconds[i]), partition_of(e.event_id, self.partitions))
            if self.stored.add(key, e.event_id):
                fresh.append(i)
        return fresh

    def _aggregate(self, chunk, events, seconds, lines, rows_of_lines, fresh) -> None:
        """The events in `fresh` into the pending cells and raw batches of their partitions."""
        by_partition: dict[int, list[int]] = defaultdict(list)
        for i in fresh:
            by_partition[partition_of(events[i].event_id, self.partitions)].append(i)
        for p, idx in by_partition.items():
            evs = [events[i] for i in idx]
            secs = [seconds[i] for i in idx]
            agg = self._cells.get(p)
            if agg is None:
                agg = self._cells[p] = PartitionAggregator(p, _NEVER_CLOSES)
            agg.add(evs, secs)
            positions = [ledger.position(self.run.run_id, chunk, rows_of_lines[i]) for i in idx]
            self._raw.setdefault(p, RawBatch()).add(evs, secs, positions, [lines[i] for i in idx])

    def _to_stream(self, events, lines: list[bytes], idx: list[int]) -> None:
        """Hand events to Kafka as the API does and wait until every one is acknowledged."""
        if not idx:
            return
        values = [lines[i] if len(lines[i]) <= MAX_LINE_AS_SENT else encode_event(events[i]) for i in idx]
        failed: list[str] = []

        def delivered(err, _msg) -> None:
            if err is not None:
                failed.append(str(err))

        producer = self._kafka()
        for p, message in group_messages(values, [events[i].event_id for i in idx], self.partitions):
            while True:
                try:
                    producer.produce(self.settings.events_topic, message, partition=p, on_delivery=delivered)
                    break
                except BufferError:
                    producer.poll(0.1)
        producer.flush()
        if failed:
            raise RuntimeError(f"Kafka did not take {len(failed)} messages: {failed[0]}")

    def _kafka(self):
        if self._producer is None:
            from confluent_kafka import Producer

            self._producer = Producer(
                {
                    "bootstrap.servers": self.settings.kafka_bootstrap,
                    "enable.idempotence": True,
                    "acks": "all",
                    "compression.type": "lz4",
                    "linger.ms": 20,
                    "log_level": 3,
                }
            )
        return self._producer

    def rejects(self, limit: int | None = None) -> list[tuple[int, str | None, str]]:
        return ledger.rejects(self.pg, self.run.run_id, limit)

    def close(self) -> None:
        if self._producer is not None:
            self._producer.flush(10)
        self.cluster.shutdown()
        self.pg.close()


def encode_reject(row: int, field: str | None, reason: str) -> bytes:
    return msgspec.json.encode({"row": row, "field": field, "reason": reason})


def connect_error(e: Exception) -> str:
    """One line on why a store could not be reached, for the CLI and Dagster."""
    if isinstance(e, psycopg.OperationalError):
        return f"PostgreSQL is not reachable: {str(e).splitlines()[0]}"
    return f"{type(e).__name__}: {e}"
