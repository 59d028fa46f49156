"""How far the stream has got: what the events topic holds against what the dataflow has committed.

The dataflow commits each partition's next offset and watermark in the same PostgreSQL transaction
as the rollups, the late ledger and (after) the raw events of that flush, so `stream_offsets` says
exactly how much of the topic every stream table reflects. The orchestration layer reads this to
report the stream's assets; nothing here changes anything.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime

from confluent_kafka import Consumer, KafkaException, TopicPartition

from tally.settings import Settings
from tally.storage import rollup_store


@dataclass(frozen=True)
class Partition:
    partition: int
    end_offset: int  # the next offset Kafka will give (high watermark)
    committed: int  # the next offset the dataflow will read; 0 if it has committed nothing yet
    watermark: datetime | None  # event time up to which this partition's minutes can close
    committed_at: datetime | None
    # Kafka's append time (epoch s) of the oldest message not yet reflected; None when caught up.
    unread_since: float | None = None

    @property
    def lag(self) -> int:
        """Messages in Kafka that no stream table reflects yet."""
        return max(0, self.end_offset - self.committed)


@dataclass(frozen=True)
class Progress:
    topic: str
    partitions: list[Partition]
    messages_last_minute: int  # messages the topic received in the minute before `read_at`
    read_at: float

    @property
    def end_offsets(self) -> int:
        return sum(p.end_offset for p in self.partitions)

    @property
    def committed(self) -> int:
        return sum(p.committed for p in self.partitions)

    @property
    def lag(self) -> int:
        return sum(p.lag for p in self.partitions)

    @property
    def caught_up(self) -> bool:
        return self.lag == 0

    @property
    def watermark(self) -> datetime | None:
        """The stream's watermark: the slowest partition's (a minute is final once all passed it)."""
        marks = [p.watermark for p in self.partitions]
        return None if not marks or None in marks else min(marks)

    @property
    def as_of(self) -> float:
        """The stream tables hold every event the topic received before this time (epoch s)."""
        behind = [p.unread_since for p in self.partitions if p.unread_since is not None]
        return min(behind, default=self.read_at)

    @property
    def version(self) -> str:
        """Changes exactly when the dataflow commits something new: the stream tables' data version."""
        return ",".join(f"{p.partition}:{p.committed}" for p in self.partitions)


class KafkaUnavailable(RuntimeError):
    pass


def read(settings: Settings, topic: str | None = None) -> Progress:
    """Read the topic's end offsets from Kafka and the committed offsets from PostgreSQL.
    Raises KafkaUnavailable or psycopg.OperationalError with the reason if a store does not answer."""
    topic = topic or settings.events_topic
    now = time.time()
    with rollup_store.connect(settings, connect_timeout=5) as conn:
        rows = conn.execute(
            "select kafka_partition, next_offset, watermark, updated_at from stream_offsets where topic = %s",
            (topic,),
        ).fetchall()
    committed = {p: (offset, mark, at) for p, offset, mark, at in rows}
    consumer = _consumer(settings)
    try:
        ends, last_minute = _end_offsets(consumer, settings, topic, now)
        parts = []
        for p, end in sorted(ends.items()):
            offset, mark, at = committed.get(p, (0, None, None))
            since = None
            if offset < end:
                # Unreadable (compacted away, a timeout): then only the last commit's time is sure.
                since = _append_time(consumer, topic, p, offset) or (at.timestamp() if at else 0.0)
            parts.append(Partition(p, end, offset, mark, at, since))
    except KafkaException as e:
        raise KafkaUnavailable(f"Kafka at {settings.kafka_bootstrap}: {e.args[0].str()}") from e
    finally:
        consumer.close()
    return Progress(topic, parts, last_minute, now)


def _consumer(settings: Settings) -> Consumer:
    return Consumer(
        {
            "bootstrap.servers": settings.kafka_bootstrap,
            "group.id": "tally-stream-progress",  # never commits: only asks for offsets
            "enable.auto.commit": False,
            "socket.timeout.ms": 5000,
        }
    )


def _end_offsets(consumer: Consumer, settings: Settings, topic: str, now: float) -> tuple[dict[int, int], int]:
    """The topic's end offset per partition, and how many messages it received in the last minute."""
    info = consumer.list_topics(topic, timeout=5).topics.get(topic)
    if info is None or info.error is not None:
        raise KafkaUnavailable(f"Kafka at {settings.kafka_bootstrap}: topic {topic!r} not found")
    ends = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=5)[1] for p in sorted(info.partitions)}
    # The first offset with a timestamp at or after a minute ago, per partition (-1: none).
    minute_ago = [TopicPartition(topic, p, int((now - 60) * 1000)) for p in ends]
    since = consumer.offsets_for_times(minute_ago, timeout=5)
    return ends, sum(ends[tp.partition] - tp.offset for tp in since if tp.offset >= 0)


def _append_time(consumer: Consumer, topic: str, partition: int, offset: int) -> float | None:
    """Kafka's timestamp of the message at `offset` (the events topic uses the broker's clock)."""
    consumer.assign([TopicPartition(topic, partition, offset)])
    msg = consumer.poll(5)
    if msg is None or msg.error():
        return None
    _kind, ms = msg.timestamp()
    return ms / 1000
