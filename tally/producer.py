"""Producing event batches to Kafka and awaiting the broker's acknowledgement of every message.

The API answers 202 only after this returns: each message was written with acks=all by an
idempotent producer. One librdkafka producer per process batches messages of all requests
together (linger), so there is no round trip per event.

Events travel as NDJSON messages of up to MAX_EVENTS_PER_MESSAGE events, each message holding
events of one partition only (chosen by `partition_of(event_id)`): the producer's per-message
cost (~2 us, plus a delivery report) is then paid once per few hundred events, and all copies of
an event_id still meet in one partition, where they can be deduplicated.
"""

from __future__ import annotations

import asyncio
import threading
import zlib
from collections.abc import Sequence

from confluent_kafka import KafkaException, Producer

from tally.settings import Settings

# Events per message: the dataflow numbers an event offset << LINE_BITS | line (tally.flush.position).
MAX_EVENTS_PER_MESSAGE = 1000
# Well under Kafka's default 1 MiB message limit, whatever the events' sizes.
MAX_MESSAGE_BYTES = 512 * 1024


def partition_of(event_id: str, partitions: int) -> int:
    """The partition of an event: stable, so every copy of an event_id lands in the same one."""
    return zlib.crc32(event_id.encode()) % partitions


def group_messages(values: Sequence[bytes], event_ids: Sequence[str], partitions: int) -> list[tuple[int, bytes]]:
    """(partition, NDJSON message) pairs holding every event once, in order within a partition."""
    groups: list[list[bytes]] = [[] for _ in range(partitions)]
    for value, event_id in zip(values, event_ids, strict=True):
        groups[partition_of(event_id, partitions)].append(value)
    messages: list[tuple[int, bytes]] = []
    for p, group in enumerate(groups):
        chunk: list[bytes] = []
        size = 0
        for v in group:
            if chunk and (len(chunk) == MAX_EVENTS_PER_MESSAGE or size + len(v) > MAX_MESSAGE_BYTES):
                messages.append((p, b"\n".join(chunk)))
                chunk, size = [], 0
            chunk.append(v)
            size += len(v) + 1
        if chunk:
            messages.append((p, b"\n".join(chunk)))
    return messages


class ProduceError(RuntimeError):
    """Not every message was acknowledged in time; the caller must not report them accepted.
    `cause` (metadata, timeout, refused, client) is the label of the 503s it causes in metrics."""

    def __init__(self, message: str, cause: str = "client"):
        super().__init__(message)
        self.cause = cause


class _Batch:
    __slots__ = ("loop", "future", "remaining", "errors")

    def __init__(self, loop: asyncio.AbstractEventLoop, n: int):
        self.loop = loop
        self.future: asyncio.Future = loop.create_future()
        self.remaining = n
        self.errors: list[str] = []

    def __call__(self, err, _msg) -> None:  # runs on the poll thread
        if err is not None:
            self.errors.append(str(err))
        self.remaining -= 1
        if self.remaining == 0:
            self.loop.call_soon_threadsafe(self._done)

    def _done(self) -> None:
        if not self.future.done():
            self.future.set_result(None)


class BatchProducer:
    def __init__(self, settings: Settings, topic: str | None = None):
        self.topic = topic or settings.events_topic
        self.timeout_s = settings.produce_timeout_s
        self.producer = Producer(
            {
                "bootstrap.servers": settings.kafka_bootstrap,
                "enable.idempotence": True,
                "acks": "all",
                "linger.ms": 5,
                "batch.num.messages": 10_000,
                "batch.size": 1_000_000,
                "compression.type": "lz4",
                "queue.buffering.max.kbytes": 1_048_576,
                # librdkafka gives up on a message after this; we stop waiting a little earlier.
                "message.timeout.ms": int(settings.produce_timeout_s * 1000) + 5_000,
                "log_level": 3,
            }
        )
        self._partitions: int | None = None
        self._running = True
        self._poller = threading.Thread(target=self._poll, name="kafka-delivery", daemon=True)
        self._poller.start()

    def _poll(self) -> None:
        while self._running:
            self.producer.poll(0.05)

    async def partitions(self) -> int:
        if self._partitions is None:
            try:
                meta = await asyncio.to_thread(self.producer.list_topics, self.topic, self.timeout_s)
                self._partitions = len(meta.topics[self.topic].partitions) or None
            except Exception as e:
                raise ProduceError(f"cannot read the partitions of topic {self.topic}: {e}", "metadata") from e
            if not self._partitions:
                raise ProduceError(f"topic {self.topic} has no partitions", "metadata")
        return self._partitions

    async def check(self) -> None:
        """Raise unless the broker answers for the topic now (the partition count above is cached)."""
        meta = await asyncio.to_thread(self.producer.list_topics, self.topic, 2)
        topic = meta.topics.get(self.topic)
        if topic is None or topic.error is not None or not topic.partitions:
            raise ProduceError(f"topic {self.topic} is not available: {topic.error if topic else 'missing'}")

    async def send_events(self, values: Sequence[bytes], event_ids: Sequence[str]) -> None:
        """Produce events (one JSON document each) as per-partition NDJSON messages; return once
        every message is acknowledged, else raise ProduceError."""
        await self._produce(group_messages(values, event_ids, await self.partitions()), len(values))

    async def _produce(self, messages: list[tuple[int, bytes]], events: int) -> None:
        if not messages:
            return
        batch = _Batch(asyncio.get_running_loop(), len(messages))
        produce = self.producer.produce
        topic = self.topic
        for partition, value in messages:
            while True:
                try:
                    produce(topic, value, partition=partition, on_delivery=batch)
                    break
                except BufferError:
                    await asyncio.sleep(0.005)  # local queue full: let deliveries drain
                except KafkaException as e:
                    raise ProduceError(str(e)) from e
        try:
            await asyncio.wait_for(asyncio.shield(batch.future), self.timeout_s)
        except TimeoutError as e:
            raise ProduceError(
                f"Kafka did not acknowledge {batch.remaining} of {len(messages)} messages ({events} events) in time",
                "timeout",
            ) from e
        if batch.errors:
            raise ProduceError(
                f"Kafka refused {len(batch.errors)} of {len(messages)} messages: {batch.errors[0]}", "refused"
            )

    def close(self) -> None:
        self.producer.flush(self.timeout_s)
        self._running = False
        self._poller.join(timeout=2)
