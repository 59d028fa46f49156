"""A Bytewax source that reads Kafka a batch at a time, one partition per source partition.

Each item is a whole Kafka batch, not one event: the aggregation then runs over the batch in one
call, which keeps Bytewax's per-item overhead off the per-event path. The resume position is not
Bytewax's snapshot but the offset committed in PostgreSQL together with the rollups (see
tally.storage.rollup_store), so position and results can never disagree.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition

from dataflows import metrics
from tally.cells import Acc, Key
from tally.settings import Settings
from tally.storage import refused, rollup_store


@dataclass
class Restore:
    watermark: int | None
    cells: dict[tuple[int, Key], Acc]  # by (width, key): minute and hour cells still open
    fresh: bool = False  # nothing was ever committed for the partition (a new topic, or wiped rollups)
    offset: int | None = None  # the committed offset reading resumes at
    # Positions past the offset that a store refused before the restart, with the reason: the
    # aggregate step dead-letters them instead of taking them in again (dataflows.commit_sink).
    refused: dict[int, str] = field(default_factory=dict)
    # Every flush commits until this offset (rollup_store.whole_until): 0 when none is recorded.
    whole_until: int = 0


@dataclass
class KafkaBatch:
    partition: int
    values: list[bytes]
    offsets: list[int]
    next_offset: int
    restore: Restore | None = None
    caught_up: bool = False  # nothing was left to read in the partition when this batch was taken
    # When Kafka took each message (its timestamp, epoch ms; empty: unknown). An event may be
    # stamped at most max_ahead_s later than that: judged by this, a replay decides the same way.
    arrivals: list[int] = field(default_factory=list)
    # Messages left in the partition after this batch, as of the broker's last fetch answer (no
    # extra request); 0 when unknown. Tells a backlog being drained from reading at the head.
    lag: int = 0


def consumer_config(settings: Settings) -> dict:
    return {
        "bootstrap.servers": settings.kafka_bootstrap,
        "group.id": "tally-dataflow",
        # Offsets live in PostgreSQL with the rollups; Kafka's are not used to resume.
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        "enable.partition.eof": False,
        "log_level": 3,
    }


class KafkaPartitionsSource(FixedPartitionedSource[tuple[str, KafkaBatch], None]):
    def __init__(self, settings: Settings, partitions: list[int]):
        self.settings = settings
        self.partitions = partitions

    def list_parts(self) -> list[str]:
        return [str(p) for p in self.partitions]

    def build_part(self, step_id: str, for_part: str, resume_state: None) -> KafkaPartition:
        return KafkaPartition(self.settings, int(for_part))


class KafkaPartition(StatefulSourcePartition[tuple[str, KafkaBatch], None]):
    def __init__(self, settings: Settings, partition: int):
        self.settings = settings
        self.partition = partition
        self.key = str(partition)
        self.topic = settings.events_topic
        with rollup_store.connect(settings, autocommit=True) as conn:
            rollup_store.apply_schema(conn)
            lateness = settings.allowed_lateness_s
            # One snapshot for everything the partition resumes from: the last commit of a process
            # killed a moment ago may still be landing (rollup_store.load_partition).
            with conn.transaction():
                conn.execute("set transaction isolation level repeatable read")
                next_offset, watermark, cells = rollup_store.load_partition(conn, self.topic, partition, lateness)
                # A partition starting afresh (topic recreated, rollups wiped) may reuse old positions.
                refused_here = refused.load(conn, self.topic, partition, next_offset) if next_offset is not None else {}
                whole_until = rollup_store.whole_until(conn, self.topic, partition)
        self.consumer = Consumer(consumer_config(settings))
        start = next_offset if next_offset is not None else OFFSET_BEGINNING
        self.consumer.assign([TopicPartition(self.topic, partition, start)])
        fresh = next_offset is None
        if next_offset is None:
            low, _high = self.consumer.get_watermark_offsets(TopicPartition(self.topic, partition), timeout=10)
            next_offset = low
        self.next_offset = next_offset
        self.restore: Restore | None = Restore(watermark, cells, fresh, next_offset, refused_here, whole_until)
        self._checked = 0.0
        self._last_lag = 0
        metrics.READ_LAG.labels(self.key).set(0)
        metrics.partition_started(self.key)

    def next_batch(self) -> list[tuple[str, KafkaBatch]]:
        behind = self._last_lag >= self.settings.backlog_messages
        size = self.settings.backlog_consume_batch if behind else self.settings.consume_batch
        msgs = self.consumer.consume(num_messages=size, timeout=0.2)
        values, offsets, arrivals = [], [], []
        for m in msgs:
            err = m.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    continue
                raise RuntimeError(f"kafka partition {self.partition}: {err}")
            values.append(m.value())
            offsets.append(m.offset())
            arrivals.append(m.timestamp()[1])
        lag = 0
        if offsets:
            self.next_offset = offsets[-1] + 1
            lag = self._lag()
            metrics.MESSAGES_READ.labels(self.key).inc(len(offsets))
            metrics.BATCHES.labels(self.key).inc()
        if lag != self._last_lag:
            metrics.READ_LAG.labels(self.key).set(lag)
        self._last_lag = lag
        # An empty batch still goes out: it is the tick that lets open buckets flush on time.
        caught_up = not offsets and self._caught_up()
        batch = KafkaBatch(self.partition, values, offsets, self.next_offset, self.restore, caught_up, arrivals, lag)
        self.restore = None
        return [(self.key, batch)]

    def _lag(self) -> int:
        """Messages after the batch, from the high watermark the last fetch answer carried."""
        try:
            got = self.consumer.get_watermark_offsets(TopicPartition(self.topic, self.partition), cached=True)
        except KafkaException:
            return 0
        return max(0, got[1] - self.next_offset) if got is not None and got[1] >= 0 else 0

    def _caught_up(self) -> bool:
        """Whether the partition has nothing more to read; asks the broker at most once a second."""
        now = time.monotonic()
        if now - self._checked < 1.0:
            return False
        self._checked = now
        try:
            _low, high = self.consumer.get_watermark_offsets(TopicPartition(self.topic, self.partition), timeout=1)
        except KafkaException:
            return False
        return high >= 0 and self.next_offset >= high

    def snapshot(self) -> None:
        return None

    def close(self) -> None:
        self.consumer.close()
