"""Malformed messages reach events.dlq with the reason, and late events reach events.late: never dropped."""

from __future__ import annotations

import json
import time
import uuid
from datetime import UTC, datetime, timedelta

from confluent_kafka import Producer

from tally.storage import rollup_store
from tests.topics import read_topic


def test_malformed_message_goes_to_the_dead_letter_topic_with_its_reason(stack):
    marker = uuid.uuid4().hex
    producer = Producer({"bootstrap.servers": stack.kafka_bootstrap, "acks": "all"})
    bad = json.dumps({"event_id": marker, "event_type": "NOT VALID", "timestamp": datetime.now(UTC).isoformat()})
    producer.produce(stack.events_topic, bad.encode(), key=marker.encode(), partition=0)
    producer.produce(stack.events_topic, f"garbage {marker}".encode(), key=marker.encode(), partition=0)
    assert producer.flush(10) == 0

    def both(msgs):
        return sum(marker.encode() in m.value() for m in msgs) >= 2

    mine = [m for m in read_topic(stack, stack.dlq_topic, both) if marker.encode() in m.value()]
    reasons = sorted(dict(m.headers())["reason"].decode() for m in mine)
    assert len(mine) == 2
    assert reasons[0].startswith("event_type:") and "not valid JSON" in reasons[1]
    assert all(dict(m.headers())["partition"] == b"0" for m in mine)


def test_event_behind_the_watermark_beyond_the_lateness_goes_to_the_late_topic(stack):
    marker = uuid.uuid4().hex
    producer = Producer({"bootstrap.servers": stack.kafka_bootstrap, "acks": "all"})
    now = datetime.now(UTC)
    fresh = {"event_id": f"{marker}-now", "event_type": "late_test", "timestamp": now.isoformat()}
    old = {
        "event_id": f"{marker}-old",
        "event_type": "late_test",
        "timestamp": (now - timedelta(seconds=stack.allowed_lateness_s + 600)).isoformat(),
    }
    # Same partition, in order: the first moves that partition's watermark to now, the second is late.
    producer.produce(stack.events_topic, json.dumps(fresh).encode(), key=fresh["event_id"].encode(), partition=1)
    assert producer.flush(10) == 0
    time.sleep(2 * stack.flush_interval_s + 1)
    producer.produce(stack.events_topic, json.dumps(old).encode(), key=old["event_id"].encode(), partition=1)
    assert producer.flush(10) == 0
    late = read_topic(stack, stack.late_topic, lambda ms: any(m.key() == old["event_id"].encode() for m in ms))
    assert [json.loads(m.value())["event_id"] for m in late if m.key().startswith(marker.encode())] == [old["event_id"]]
    # ... and the late ledger table, committed with the rollups, where /api/aggregate counts it.
    deadline = time.monotonic() + 30  # the topic is written first, the table when the flush commits
    with rollup_store.connect(stack, autocommit=True) as conn:
        while (
            row := conn.execute(
                "select bucket, event_type, kafka_partition from late_events where event_id = %s", (old["event_id"],)
            ).fetchone()
        ) is None and time.monotonic() < deadline:
            time.sleep(0.2)
    old_minute = datetime.fromisoformat(old["timestamp"]).replace(second=0, microsecond=0)
    assert row == (old_minute, "late_test", 1)


def test_poison_messages_from_another_producer_are_dead_lettered_with_their_reasons(stack):
    # What no API would accept, written to Kafka directly: each is dead-lettered with its reason and
    # position, and an ordinary event in the same message is counted.
    marker = uuid.uuid4().hex
    now = datetime.now(UTC)

    def event(n: int, **fields) -> bytes:
        e = {"event_id": f"{marker}-{n}", "event_type": "poison_test", "timestamp": now.isoformat(), **fields}
        return json.dumps(e).encode()

    lines = [
        event(0, source="a\u0000b"),  # json.dumps writes \u0000
        event(1)[:-1] + b',"user_id":"\\ud800"}',  # a lone surrogate
        event(2, timestamp="0001-01-01T00:00:00+05:00"),
        event(3, timestamp=(now + timedelta(days=365)).isoformat()),  # a year ahead of its arrival
        event(4, value=1.7976931348623157e308),
        event(5),  # ordinary
    ]
    oversized = b"\n".join(event(100 + i) for i in range(1025))  # more events than positions can number
    producer = Producer({"bootstrap.servers": stack.kafka_bootstrap, "acks": "all"})
    producer.produce(stack.events_topic, b"\n".join(lines), partition=2)
    producer.produce(stack.events_topic, oversized, partition=2)
    producer.produce(stack.events_topic, None, key=marker.encode(), partition=2)  # a tombstone
    assert producer.flush(10) == 0

    letters = read_topic(stack, stack.dlq_topic, lambda ms: sum(marker.encode() in m.value() for m in ms) >= 6)
    mine = [m for m in letters if marker.encode() in m.value()]
    first_offset = min(int(dict(m.headers())["offset"]) for m in mine)
    tombstone = read_topic(stack, stack.dlq_topic, lambda ms: any(_at(m, first_offset + 2) for m in ms), 30)
    assert [dict(m.headers())["reason"] for m in tombstone if _at(m, first_offset + 2)][:1] == [
        b"message: no value (a tombstone), not an event"
    ]
    where = {(int(dict(m.headers())["offset"]), int(dict(m.headers())["line"])): m for m in mine}
    print("\n" + "\n".join(f"  {k}: {dict(m.headers())['reason'].decode()}" for k, m in sorted(where.items())))
    assert len(where) == 6
    (first, _line), *_ = sorted(where)
    reasons = [dict(where[(first, line)].headers())["reason"].decode() for line in range(5)]
    assert reasons[0].startswith("source: must not contain control characters")
    assert "surrogate" in reasons[1]
    assert reasons[2].startswith("timestamp: must be 1970-01-01")
    assert reasons[3].startswith("timestamp: more than 300 s ahead of its arrival in Kafka")
    assert reasons[4].startswith("value: Expected `float` <= 1e+289")
    assert [where[(first, line)].value() for line in range(5)] == lines[:5]  # each line as it came
    whole = where[(first + 1, 0)]
    assert whole.value() == oversized and b"more than 1024 events" in dict(whole.headers())["reason"]


def _at(message, offset: int) -> bool:
    headers = dict(message.headers())
    return headers.get("partition") == b"2" and headers.get("offset") == str(offset).encode()
