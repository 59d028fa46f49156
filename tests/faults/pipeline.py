"""An API and a dataflow of their own, on a topic of their own, beside the test stack's: a stream whose
event time the test owns, so it can run in the past and close hours (the stack's own dataflow
follows the wall clock) and be killed without touching the rest of the suite."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator

from confluent_kafka.admin import AdminClient, NewTopic

from tally.settings import Settings
from tally.stack import runner
from tally.stack.kafka import topic_config


@contextlib.contextmanager
def own_pipeline(stack: Settings, name: str = "faults", **overrides) -> Iterator[Settings]:
    topic = f"events.{name}.{uuid.uuid4().hex[:6]}"
    settings = stack.model_copy(
        update={
            "state_dir": stack.state_dir / "pipelines" / name,
            "events_topic": topic,
            "dlq_topic": f"{topic}.dlq",
            "late_topic": f"{topic}.late",
            "api_port": stack.api_port + 100,
            "dataflow_metrics_port": stack.dataflow_metrics_port + 100,
            # Its event time is in the past: a caught-up partition must not jump to the wall clock.
            "idle_lag_s": 10**9,
            **overrides,
        }
    )
    admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap})
    new = [
        NewTopic(t, num_partitions=settings.kafka_partitions, replication_factor=1, config=topic_config(t, settings))
        for t in settings.kafka_topics
    ]
    for future in admin.create_topics(new).values():
        future.result(timeout=30)
    results = runner.up(settings, ["api", "dataflow"])
    try:
        assert all(r.ok for r in results), [r.message for r in results]
        yield settings
    finally:
        runner.down(settings, ["api", "dataflow"])
        for future in admin.delete_topics(list(settings.kafka_topics)).values():
            with contextlib.suppress(Exception):
                future.result(timeout=30)
