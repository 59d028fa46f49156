"""The sink that makes a partition's flush durable, in an order that survives a crash anywhere:

1. malformed messages to `events.dlq` and late events to `events.late` (acknowledged by Kafka),
2. raw events to Cassandra (idempotent: a replay rewrites the same rows),
3. rollup rows and the partition's next offset to PostgreSQL in one transaction.

A crash before 3 replays the batch from the old offset and rewrites 1-2 (at worst a DLQ/late
record twice, each carrying its source offset); a crash after 3 resumes after it. Rollups are
therefore exactly once. A flush between commits (while a backlog drains, dataflows.aggregate)
stops after 2; the replay after a crash rewrites it the same way.

A store that fails is either down (connection lost, timeout, overload: retried with back-off,
holding the dataflow back, nothing new read, memory bounded) or refusing what some events hold
(a value it cannot store: retrying cannot help). Refused events are found by writing the flush's
parts one by one, their positions recorded (tally.storage.refused), and the process exits: the
supervisor restarts it, the replay dead-letters those events with the reason and the rest of the
flush commits. Neither kind can stop a partition for good.
"""

from __future__ import annotations

import logging
import time
from collections import Counter

import msgspec
import psycopg
from bytewax.outputs import DynamicSink, StatelessSinkPartition
from confluent_kafka import KafkaError, Producer

from dataflows import metrics
from tally.cells import BUCKET_S, HOUR_S, RollupRow, hour_of
from tally.events.schema import Event, encode_event
from tally.flush import LINE_BITS, Flush
from tally.settings import Settings
from tally.storage import raw_events, raw_writer, refused, rollup_store
from tally.storage.raw_writer import RefusedRows

log = logging.getLogger("tally.dataflow.commit")
# A dead letter carries the line as it came, up to this much (a Kafka message is at most 1 MiB;
# the record must stay under it with its headers): a longer one is cut and says so.
MAX_DEAD_LETTER = 256 * 1024
_events = msgspec.json.Decoder(list[Event])


class RefusedEvents(Exception):
    """Some events of a flush were refused by a store for their content: recorded, restart."""


class CommitSink(DynamicSink[Flush]):
    def __init__(self, settings: Settings):
        self.settings = settings

    def build(self, step_id: str, worker_index: int, worker_count: int) -> CommitPartition:
        return CommitPartition(self.settings)


class CommitPartition(StatelessSinkPartition[Flush]):
    def __init__(self, settings: Settings):
        self.settings = settings
        self.pg = rollup_store.connect(settings)
        self.cluster = raw_events.cluster(settings)
        self.session = self.cluster.connect(settings.cassandra_keyspace)
        self.raw = raw_writer.RawEventWriter(self.session, settings)
        self.producer = Producer(
            {"bootstrap.servers": settings.kafka_bootstrap, "enable.idempotence": True, "acks": "all", "log_level": 3}
        )

    def write_batch(self, items: list[Flush]) -> None:
        for flush in items:
            t0 = time.perf_counter()
            self._stage("kafka", flush, self._side_topics)
            self._stage("cassandra", flush, lambda f: self.raw.write(f.raw, shard=f.partition))
            if flush.commit:
                self._stage("postgres", flush, self._commit)
            self._observe(flush, time.perf_counter() - t0)

    def _stage(self, store: str, flush: Flush, write) -> None:
        """Write one store's part of the flush: retry while the store is down or overloaded;
        record and restart if it refuses some events for what they hold."""
        delay = 0.5
        with metrics.STAGE_SECONDS.labels(store).time():
            while True:
                try:
                    write(flush)
                    if delay > 0.5:
                        log.warning("%s is writable again", store)
                    return
                except Exception as e:
                    positions = self._refused(store, flush, e)
                    if positions:
                        metrics.STORE_FAILURES.labels(store, "refused").inc()
                        self._record_and_restart(store, flush, positions)
                    metrics.STORE_FAILURES.labels(store, "transient").inc()
                    log.warning("%s write failed (%s); retrying in %.1f s", store, e, delay)
                    time.sleep(delay)
                    delay = min(delay * 2, 10.0)

    def _refused(self, store: str, flush: Flush, error: Exception) -> dict[int, str]:
        """{position: reason} of the events the store refused, or {} if it is rather down."""
        if isinstance(error, RefusedRows):
            return error.positions
        if store != "postgres" or not isinstance(error, psycopg.DataError | psycopg.IntegrityError):
            return {}
        if flush.partials:
            self._commit_every_flush_and_restart(flush, error)
        try:
            rows, late = rollup_store.refused_parts(self._connection(), self.settings.events_topic, flush)
        except psycopg.Error:
            return {}  # the database went away meanwhile: retry as for an outage
        found = _positions_in(flush, rows)
        positions = {p: f"refused by PostgreSQL: {reason}" for p, reason in late.items()}
        positions.update({p: f"refused by PostgreSQL: {reason}" for p, (reason, _key) in found.items()})
        matched = {key for _reason, key in found.values()}
        unmatched = [r for r, _reason in rows if (r.width, r.bucket, r.event_type, r.source) not in matched]
        if unmatched and not positions:
            # Refused rows none of this flush's events are in (an hour closing, a minute turning
            # final): there is no event to dead-letter, so they are left out and the rest written.
            log.error("PostgreSQL refused %d rollup rows with no new events in them; left out", len(unmatched))
            metrics.ROWS_LEFT_OUT.labels(str(flush.partition)).inc(len(unmatched))
            left_out = {id(r) for r in unmatched}
            flush.rows = [r for r in flush.rows if id(r) not in left_out]
        return positions

    def _record_and_restart(self, store: str, flush: Flush, positions: dict[int, str]) -> None:
        first = min(positions)
        log.error(
            "partition %d: %s refused %d events (first at offset %d line %d: %s); recorded, restarting"
            " so they are dead-lettered and the rest of the flush commits",
            flush.partition,
            store,
            len(positions),
            first >> LINE_BITS,
            first & ((1 << LINE_BITS) - 1),
            positions[first],
        )
        try:
            # Read again without the refused events, the flush's raw pieces are cut elsewhere: the
            # rows of this cut must not stay behind with a refused event or a second copy of others.
            self.raw.forget(flush.raw, shard=flush.partition)
        except Exception as e:
            log.error("partition %d: could not delete the flush's raw rows before restarting: %s", flush.partition, e)
        with rollup_store.connect(self.settings, autocommit=True) as conn:
            refused.record(conn, self.settings.events_topic, flush.partition, positions)
        raise RefusedEvents(f"partition {flush.partition}: {len(positions)} events refused by {store}")

    def _commit_every_flush_and_restart(self, flush: Flush, error: Exception) -> None:
        """PostgreSQL refused a commit whose rows also hold events of the flushes before it, whose
        raw events this one does not carry: which events it refused cannot be told here. Replayed
        with every flush committing, the refusal comes back in a flush that carries them."""
        log.error(
            "partition %d: PostgreSQL refused a commit covering %d earlier flushes (%s); restarting with"
            " every flush committing up to offset %d, so the refused events can be found",
            flush.partition,
            flush.partials,
            error,
            flush.next_offset,
        )
        with rollup_store.connect(self.settings, autocommit=True) as conn:
            rollup_store.commit_every_flush_until(conn, self.settings.events_topic, flush.partition, flush.next_offset)
        raise RefusedEvents(f"partition {flush.partition}: PostgreSQL refused a commit of {flush.partials + 1} flushes")

    def _connection(self) -> psycopg.Connection:
        if self.pg.closed:
            self.pg = rollup_store.connect(self.settings)
        return self.pg

    def _commit(self, flush: Flush) -> None:
        conn = self._connection()
        try:
            rollup_store.write_flush(conn, self.settings.events_topic, flush)
        except Exception:
            conn.close()  # reconnect on the next try: the transaction was rolled back
            raise

    def _side_topics(self, flush: Flush) -> None:
        if not flush.invalid and not flush.late:
            return
        errors: list = []

        def check(err, _msg):
            if err is not None:
                errors.append(err)

        part = str(flush.partition).encode()
        for pos, value, reason in flush.invalid:
            offset, line = pos >> LINE_BITS, pos & ((1 << LINE_BITS) - 1)
            headers = [
                ("reason", refused.storable(reason).encode()),
                ("partition", part),
                ("offset", str(offset).encode()),
                ("line", str(line).encode()),
            ]
            if len(value) > MAX_DEAD_LETTER:
                headers.append(("truncated_from", str(len(value)).encode()))
                value = value[:MAX_DEAD_LETTER]
            self.producer.produce(self.settings.dlq_topic, value=value, headers=headers, on_delivery=check)
        for e in flush.late:
            self.producer.produce(
                self.settings.late_topic, key=e.event_id.encode(), value=encode_event(e), on_delivery=check
            )
        remaining = self.producer.flush(30)
        if remaining or errors:
            # Raising makes write_batch retry before the offset moves: nothing is lost.
            codes = {e.code() for e in errors if isinstance(e, KafkaError)}
            raise RuntimeError(f"could not write dead-letter/late records: {errors[:3] or remaining} ({codes})")

    def _observe(self, flush: Flush, seconds: float) -> None:
        p = str(flush.partition)
        metrics.FLUSH_SECONDS.observe(seconds)
        metrics.ROWS.labels(p).inc(len(flush.rows))
        metrics.RAW.labels(p).inc(len(flush.raw))
        metrics.EVENTS.labels(p).inc(len(flush.raw) - len(flush.late))
        metrics.LATE.labels(p).inc(len(flush.late))
        kinds = Counter(metrics.dead_letter_kind(reason) for _pos, _value, reason in flush.invalid)
        for kind, n in kinds.items():
            metrics.DEAD_LETTERS.labels(p, kind).inc(n)
        metrics.FLUSHES.labels(p, "commit" if flush.commit else "raw").inc()
        if flush.commit:
            metrics.COMMITTED.labels(p).set(flush.next_offset)
        if flush.watermark is not None:
            metrics.watermark_at(p, flush.watermark)

    def close(self) -> None:
        self.producer.flush(10)
        self.cluster.shutdown()
        self.pg.close()


def _positions_in(flush: Flush, rows: list[tuple[RollupRow, str]]) -> dict[int, tuple[str, tuple]]:
    """The positions of this flush's events that went into refused rollup rows: {position:
    (reason, row key)}. Found from the raw chunks (grouped by type and second) and their sources."""
    refused_rows = {(r.width, r.bucket, r.event_type, r.source): reason for r, reason in rows}
    types = {key[2] for key in refused_rows}
    late = set(flush.late_positions)  # raw storage keeps late events too; no rollup row holds them
    found: dict[int, tuple[str, tuple]] = {}
    for (event_type, second), (positions, lines) in flush.raw.chunks.items():
        if event_type not in types:
            continue
        minute, hour = second - second % BUCKET_S, hour_of(second)
        for pos, event in zip(positions, _events.decode(b"[" + b",".join(lines) + b"]"), strict=True):
            if pos in late:
                continue
            for key in ((BUCKET_S, minute, event_type, event.source), (HOUR_S, hour, event_type, event.source)):
                if key in refused_rows:
                    found[pos] = (refused_rows[key], key)
                    break
    return found
