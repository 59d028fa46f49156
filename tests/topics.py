"""Reading what the dataflow wrote to its side topics (events.dlq, events.late), from the start."""

from __future__ import annotations

import time
import uuid

from confluent_kafka import Consumer, TopicPartition


def read_topic(settings, topic: str, want, timeout_s: float = 45) -> list:
    """Every message of `topic` until `want(messages so far)` holds or the time is up."""
    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka_bootstrap,
            "group.id": f"t-{uuid.uuid4().hex[:6]}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.assign([TopicPartition(topic, p, 0) for p in range(settings.kafka_partitions)])
    found = []
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline and not want(found):
            for m in consumer.consume(500, timeout=0.5):
                if m.error() is None:
                    found.append(m)
    finally:
        consumer.close()
    return found
