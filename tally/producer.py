"""Producing event batches to Kafka and awaiting the broker's acknowledgement of every message.

The API answers 202 only after this returns: each message was written with acks=all by an
idempotent producer. One librdkafka producer per process batches messages of all requests
together (linger), so there is no round trip per event.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence

from confluent_kafka import KafkaException, Producer

from tally.settings import Settings


class ProduceError(RuntimeError):
    """Not every message was acknowledged in time; the caller must not report them accepted."""


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
        self._running = True
        self._poller = threading.Thread(target=self._poll, name="kafka-delivery", daemon=True)
        self._poller.start()

    def _poll(self) -> None:
        while self._running:
            self.producer.poll(0.05)

    async def send(self, values: Sequence[bytes], keys: Sequence[bytes]) -> None:
        """Produce all messages; return once every one is acknowledged, else raise ProduceError."""
        if not values:
            return
        batch = _Batch(asyncio.get_running_loop(), len(values))
        produce = self.producer.produce
        topic = self.topic
        for value, key in zip(values, keys, strict=True):
            while True:
                try:
                    produce(topic, value, key, on_delivery=batch)
                    break
                except BufferError:
                    await asyncio.sleep(0.005)  # local queue full: let deliveries drain
                except KafkaException as e:
                    raise ProduceError(str(e)) from e
        try:
            await asyncio.wait_for(asyncio.shield(batch.future), self.timeout_s)
        except TimeoutError as e:
            raise ProduceError(f"Kafka did not acknowledge {batch.remaining} of {len(values)} events in time") from e
        if batch.errors:
            raise ProduceError(f"Kafka refused {len(batch.errors)} events: {batch.errors[0]}")

    def close(self) -> None:
        self.producer.flush(self.timeout_s)
        self._running = False
        self._poller.join(timeout=2)
