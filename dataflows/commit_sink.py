"""The sink that makes a partition's flush durable, in an order that survives a crash anywhere:

1. malformed messages to `events.dlq` and late events to `events.late` (acknowledged by Kafka),
2. raw events to Cassandra (idempotent: a replay rewrites the same rows),
3. rollup rows and the partition's next offset to PostgreSQL in one transaction.

A crash before 3 replays the batch from the old offset and rewrites 1-2 (at worst a DLQ/late
record twice, each carrying its source offset); a crash after 3 resumes after it. Rollups are
therefore exactly once. A store that fails is retried with back-off, holding the dataflow back.
"""

from __future__ import annotations

import logging
import time

from bytewax.outputs import DynamicSink, StatelessSinkPartition
from confluent_kafka import Producer

from dataflows import metrics
from tally.events.schema import encode_event
from tally.rollup import LINE_BITS, Flush
from tally.settings import Settings
from tally.storage import raw_events, rollups

log = logging.getLogger("tally.dataflow.commit")


class CommitSink(DynamicSink[Flush]):
    def __init__(self, settings: Settings):
        self.settings = settings

    def build(self, step_id: str, worker_index: int, worker_count: int) -> CommitPartition:
        return CommitPartition(self.settings)


class CommitPartition(StatelessSinkPartition[Flush]):
    def __init__(self, settings: Settings):
        self.settings = settings
        self.pg = rollups.connect(settings)
        self.cluster = raw_events.cluster(settings)
        self.session = self.cluster.connect(settings.cassandra_keyspace)
        self.raw = raw_events.RawEventWriter(self.session, settings)
        self.producer = Producer(
            {"bootstrap.servers": settings.kafka_bootstrap, "enable.idempotence": True, "acks": "all", "log_level": 3}
        )

    def write_batch(self, items: list[Flush]) -> None:
        for flush in items:
            t0 = time.perf_counter()
            self._retrying("kafka side topics", lambda f=flush: self._side_topics(f))
            self._retrying("cassandra", lambda f=flush: self.raw.write(f.raw, shard=f.partition))
            self._retrying("postgres", lambda f=flush: self._commit(f))
            self._observe(flush, time.perf_counter() - t0)

    def _commit(self, flush: Flush) -> None:
        if self.pg.closed:
            self.pg = rollups.connect(self.settings)
        try:
            rollups.write_flush(self.pg, self.settings.events_topic, flush)
        except Exception:
            self.pg.close()  # reconnect on the next try: the transaction was rolled back
            raise

    def _retrying(self, what: str, step) -> None:
        """Retry a store that is down or overloaded, holding the dataflow back (nothing new is read
        while this blocks, so memory stays bounded) instead of crashing into a replay loop."""
        delay = 0.5
        with metrics.STAGE_SECONDS.labels(what).time():
            while True:
                try:
                    step()
                    if delay > 0.5:
                        log.warning("%s is writable again", what)
                    return
                except Exception as e:
                    metrics.STORE_RETRIES.labels(what).inc()
                    log.warning("%s write failed (%s); retrying in %.1f s", what, e, delay)
                    time.sleep(delay)
                    delay = min(delay * 2, 10.0)

    def _side_topics(self, flush: Flush) -> None:
        if not flush.invalid and not flush.late:
            return
        errors: list[str] = []

        def check(err, _msg):
            if err is not None:
                errors.append(str(err))

        part = str(flush.partition).encode()
        for pos, value, reason in flush.invalid:
            offset, line = pos >> LINE_BITS, pos & ((1 << LINE_BITS) - 1)
            headers = [
                ("reason", reason.encode()),
                ("partition", part),
                ("offset", str(offset).encode()),
                ("line", str(line).encode()),
            ]
            self.producer.produce(self.settings.dlq_topic, value=value, headers=headers, on_delivery=check)
        for e in flush.late:
            self.producer.produce(
                self.settings.late_topic, key=e.event_id.encode(), value=encode_event(e), on_delivery=check
            )
        remaining = self.producer.flush(30)
        if remaining or errors:
            # Raising makes write_batch retry before the offset moves: nothing is lost.
            raise RuntimeError(f"could not write dead-letter/late records: {errors or remaining}")

    def _observe(self, flush: Flush, seconds: float) -> None:
        p = str(flush.partition)
        metrics.FLUSH_SECONDS.observe(seconds)
        metrics.ROWS.labels(p).inc(len(flush.rows))
        metrics.RAW.labels(p).inc(len(flush.raw))
        metrics.EVENTS.labels(p).inc(len(flush.raw) - len(flush.late))
        metrics.LATE.labels(p).inc(len(flush.late))
        metrics.INVALID.labels(p).inc(len(flush.invalid))
        metrics.COMMITTED.labels(p).set(flush.next_offset)
        if flush.watermark is not None:
            metrics.WATERMARK.labels(p).set(flush.watermark)

    def close(self) -> None:
        self.producer.flush(10)
        self.cluster.shutdown()
        self.pg.close()
