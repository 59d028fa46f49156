import uuid

import pytest
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, NewTopic


@pytest.fixture
def topic(stack):
    admin = AdminClient({"bootstrap.servers": stack.kafka_bootstrap})
    name = f"test.roundtrip.{uuid.uuid4().hex[:8]}"
    admin.create_topics([NewTopic(name, num_partitions=3, replication_factor=1)])[name].result(timeout=30)
    yield name
    admin.delete_topics([name])[name].result(timeout=30)


def test_project_topics_exist_with_the_configured_partition_count(stack):
    meta = AdminClient({"bootstrap.servers": stack.kafka_bootstrap}).list_topics(timeout=10)
    for name in stack.kafka_topics:
        assert name in meta.topics, f"topic {name} was not created by `stack up`"
        assert len(meta.topics[name].partitions) == stack.kafka_partitions


def test_messages_produced_with_acks_all_are_consumed_exactly_once_in_order(stack, topic):
    producer = Producer(
        {"bootstrap.servers": stack.kafka_bootstrap, "enable.idempotence": True, "acks": "all", "linger.ms": 5}
    )
    delivered: list[tuple[int, int]] = []

    def on_delivery(err, msg):
        assert err is None, err
        delivered.append((msg.partition(), msg.offset()))

    sent = {f"k{i % 7}": [] for i in range(7)}
    for i in range(2000):
        key = f"k{i % 7}"
        sent[key].append(str(i))
        producer.produce(topic, key=key, value=str(i).encode(), on_delivery=on_delivery)
    assert producer.flush(30) == 0
    assert len(delivered) == 2000

    consumer = Consumer(
        {
            "bootstrap.servers": stack.kafka_bootstrap,
            "group.id": f"test-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    received: dict[str, list[str]] = {k: [] for k in sent}
    count = 0
    for _ in range(120):
        for msg in consumer.consume(num_messages=1000, timeout=0.5):
            assert msg.error() is None, msg.error()
            received[msg.key().decode()].append(msg.value().decode())
            count += 1
        if count >= 2000:
            break
    consumer.close()
    # Same key -> same partition -> order kept; and nothing lost or duplicated.
    assert received == sent
