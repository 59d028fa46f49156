"""Aggregates answered from hour rows plus minute edges equal the ground truth, at every granularity."""

from __future__ import annotations

import asyncio
import random
import uuid
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from tally.events.schema import Event
from tally.rollup import PartitionAggregator
from tally.storage import aggregates, rollups


@pytest.fixture(scope="module")
def written(stack):
    """Three hours of events for a fresh event type, aggregated and flushed as the dataflow does."""
    rng = random.Random(11)
    et = f"agg.{uuid.uuid4().hex[:8]}"
    h0 = datetime(2026, 1, 5, 10, tzinfo=UTC)
    events = [
        Event(
            f"{et}-{i}",
            et,
            h0 + timedelta(seconds=rng.uniform(0, 3 * 3600)),
            rng.choice(["a", "b"]),
            f"u{rng.randrange(300)}",
            float(rng.randrange(100)),
        )
        for i in range(6000)
    ]
    events.sort(key=lambda e: e.timestamp)
    with rollups.connect(stack) as conn:
        for partition in (90, 91):  # two partitions' rows, as queries must add them up
            agg = PartitionAggregator(partition, allowed_lateness_s=3600 * 24)
            mine = events[partition % 2 :: 2]
            for i in range(0, len(mine), 500):
                agg.add(mine[i : i + 500])
                rollups.write_flush(conn, f"test-{et}", agg.flush(i))
    return et, h0, events


def query(stack, et, start, end, granularity, group_by=()):
    q = aggregates.AggregateQuery(start, end, granularity, ["count", "sum", "unique_users"], list(group_by), [et], [])

    async def go():
        async with await psycopg.AsyncConnection.connect(stack.pg_dsn) as conn:
            return await aggregates.run(conn, q, has_hll=True)

    return asyncio.run(go())


@pytest.mark.parametrize("granularity", ["1m", "15m", "1h", "1d"])
def test_counts_and_sums_match_the_truth_with_ragged_edges(stack, written, granularity):
    et, h0, events = written
    start, end = h0 + timedelta(minutes=37), h0 + timedelta(hours=2, minutes=51)
    step = aggregates.GRANULARITIES[granularity]
    truth: dict = {}
    for e in events:
        if start <= e.timestamp < end:
            t = datetime.fromtimestamp(e.timestamp.timestamp() // step.total_seconds() * step.total_seconds(), UTC)
            c = truth.setdefault(t, [0, 0.0])
            c[0] += 1
            c[1] += e.value
    (series,) = query(stack, et, start, end, granularity)
    got = {p["t"]: [p["count"], p["sum"]] for p in series["points"]}
    assert got.keys() == truth.keys()
    for t, (count, total) in truth.items():
        assert got[t][0] == count and got[t][1] == pytest.approx(total)


def test_unique_users_from_hour_rows_equal_those_from_minute_rows(stack, written):
    et, h0, _events = written
    start, end = h0 + timedelta(minutes=5), h0 + timedelta(hours=3)
    (by_hour,) = query(stack, et, start, end, "1d")
    exact_users = len({e.user_id for e in written[2] if start <= e.timestamp < end})
    assert by_hour["points"][0]["unique_users"] == pytest.approx(exact_users, rel=0.07)
    assert aggregates.sources(aggregates.AggregateQuery(start, end, "1d", [], [], [], []))[0][0] == "rollup_1h"
