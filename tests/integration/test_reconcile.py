"""Reconciliation finds exactly the cells where raw events and rollups + late ledger disagree."""

from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime, timedelta

from tally.aggregator import PartitionAggregator
from tally.events.schema import Event, encode_event
from tally.flush import RawBatch
from tally.storage import raw_events, raw_writer, rollup_store
from tally.storage.reconcile import reconcile

H0 = datetime(2026, 5, 7, 8, tzinfo=UTC)
HOURS = timedelta(hours=2)
PARTITION = 1


def pipeline(stack, et: str, batches: list[list[Event]]) -> None:
    """What the dataflow does with each batch: aggregate, raw chunks to Cassandra, rollups to PostgreSQL."""
    # One Kafka partition is one raw shard; each test's topic (and event types) are its own.
    agg = PartitionAggregator(PARTITION, allowed_lateness_s=600)
    cluster = raw_events.cluster(stack)
    writer = raw_writer.RawEventWriter(cluster.connect(stack.cassandra_keyspace), stack)
    offset = 0
    with rollup_store.connect(stack) as conn:
        for batch in batches:
            raw = [(offset + i << 10, e, encode_event(e)) for i, e in enumerate(batch)]
            offset += len(batch)
            agg.add(batch, None, [p for p, _e, _v in raw])
            flush = agg.flush(offset, RawBatch.of(raw))
            writer.write(flush.raw, shard=PARTITION)
            rollup_store.write_flush(conn, f"test-{et}", flush)
    cluster.shutdown()


def events(et: str, seed: int) -> list[Event]:
    rng = random.Random(seed)
    return sorted(
        (
            Event(f"{et}-{i}", et, H0 + timedelta(seconds=rng.uniform(0, 7200)), rng.choice(["web", "ios"]))
            for i in range(2000)
        ),
        key=lambda e: e.timestamp,
    )


def mismatches(stack, et: str) -> dict:
    """(hour, source) -> difference for one event type (other tests' data may disagree on purpose)."""
    return {(m.hour, m.source): m.difference for m in reconcile(stack, H0, H0 + HOURS) if m.event_type == et}


def test_rollups_and_late_ledger_account_for_every_raw_event_and_mismatches_are_reported(stack):
    clean, dup = f"recon.{uuid.uuid4().hex[:8]}", f"recon.{uuid.uuid4().hex[:8]}"
    late = [Event(f"{clean}-late{i}", clean, H0 + timedelta(minutes=5, seconds=i), "web") for i in range(7)]
    on_time = events(clean, 8)
    pipeline(stack, clean, [on_time[:1000], on_time[1000:], late])
    assert mismatches(stack, clean) == {}

    # A client retry the dataflow did not catch: the same event_id counted twice, stored once.
    retried = events(dup, 9)
    pipeline(stack, dup, [retried[:1000], retried[1000:], [retried[-1]]])
    assert mismatches(stack, dup) == {(H0 + timedelta(hours=1), retried[-1].source): -1}

    # A rollup row lost: its events are in raw storage but no longer counted.
    with rollup_store.connect(stack) as conn:
        gone = conn.execute(
            "delete from rollup_1m where event_type = %s and bucket = %s and source = 'ios' returning event_count",
            (clean, H0 + timedelta(minutes=10)),
        ).fetchone()[0]
    assert mismatches(stack, clean) == {(H0, "ios"): gone}


def test_events_stored_before_a_limit_existed_are_still_counted(stack):
    # Stored when ingest still took values up to float64's maximum (today's limit is 1e289): raw
    # storage keeps them, and the reconciliation must count them, not fail on reading them.
    et = f"recon.{uuid.uuid4().hex[:8]}"
    old = [Event(f"{et}-{i}", et, H0 + timedelta(minutes=3, seconds=i), "web", value=1e300) for i in range(3)]
    pipeline(stack, et, [old])
    assert mismatches(stack, et) == {}
