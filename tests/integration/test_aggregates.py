"""Aggregates answered from hour rows plus minute edges equal the ground truth, at every granularity."""

from __future__ import annotations

import asyncio
import random
import uuid
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from tally.aggregator import PartitionAggregator
from tally.events.schema import Event
from tally.storage import aggregates, rollup_store

LATENESS = 600
LATENESS_TD = timedelta(seconds=LATENESS)


@pytest.fixture(scope="module")
def written(stack):
    """Three hours of events for a fresh event type, aggregated and flushed as the dataflow does;
    with 10 minutes' lateness the first two hours close and get hour rows."""
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
    with rollup_store.connect(stack) as conn:
        for partition in (90, 91):  # two partitions' rows, as queries must add them up
            agg = PartitionAggregator(partition, allowed_lateness_s=LATENESS)
            mine = events[partition % 2 :: 2]
            for i in range(0, len(mine), 500):
                agg.add(mine[i : i + 500])
                rollup_store.write_flush(conn, f"test-{et}", agg.flush(i))
    return et, h0, events


def final_before(events):
    # As aggregates.stream_state computes it; both partitions saw events up to nearly the end.
    return min(max(e.timestamp for e in events[p::2]) for p in (0, 1)).replace(microsecond=0) - LATENESS_TD


def query(stack, et, start, end, granularity, group_by=(), final=None):
    q = aggregates.AggregateQuery(start, end, granularity, ["count", "sum", "unique_users"], list(group_by), [et], [])

    async def go():
        async with await psycopg.AsyncConnection.connect(stack.pg_dsn) as conn:
            return await aggregates.run(conn, q, has_hll=True, final_before=final)

    return asyncio.run(go())


@pytest.mark.parametrize("granularity", ["1m", "15m", "1h", "1d"])
@pytest.mark.parametrize("hour_rows", [True, False])
def test_counts_and_sums_match_the_truth_with_ragged_edges(stack, written, granularity, hour_rows):
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
    (series,) = query(stack, et, start, end, granularity, final=final_before(events) if hour_rows else None)
    got = {p["t"]: [p["count"], p["sum"]] for p in series["points"]}
    assert got.keys() == truth.keys()
    for t, (count, total) in truth.items():
        assert got[t][0] == count and got[t][1] == pytest.approx(total)


def test_unique_users_from_hour_rows_equal_those_from_minute_rows(stack, written):
    et, h0, events = written
    start, end = h0 + timedelta(minutes=5), h0 + timedelta(hours=3)
    final = final_before(events)
    (by_hour,) = query(stack, et, start, end, "1d", final=final)
    (by_minute,) = query(stack, et, start, end, "1d")
    exact_users = len({e.user_id for e in events if start <= e.timestamp < end})
    assert by_hour["points"][0]["unique_users"] == pytest.approx(exact_users, rel=0.07)
    assert [p | {"final": None} for p in by_hour["points"]] == [p | {"final": None} for p in by_minute["points"]]
    assert aggregates.sources(aggregates.AggregateQuery(start, end, "1d", [], [], [], []), final)[0] == (
        "rollup_1h",
        h0 + timedelta(hours=1),
        h0 + timedelta(hours=2),
    )
    with rollup_store.connect(stack) as conn:
        hours = conn.execute("select count(*) from rollup_1h where event_type = %s and final", (et,)).fetchone()[0]
    assert hours == 2 * 2 * 2  # the two closed hours, for each source, in each of the two partitions


def test_a_restart_rebuilds_the_open_hour_from_its_minute_rows(stack):
    et = f"restart.{uuid.uuid4().hex[:8]}"
    rng = random.Random(3)
    h0 = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=2)
    events = sorted(
        (
            Event(f"{et}-{i}", et, h0 + timedelta(seconds=rng.uniform(0, 5400)), "web", f"u{rng.randrange(400)}", 1.0)
            for i in range(3000)
        ),
        key=lambda e: e.timestamp,
    )
    agg = PartitionAggregator(92, allowed_lateness_s=LATENESS)
    with rollup_store.connect(stack) as conn:
        for i in range(0, len(events), 250):
            agg.add(events[i : i + 250])
            rollup_store.write_flush(conn, f"test-{et}", agg.flush(i + 250))
        _offset, watermark, cells = rollup_store.load_partition(conn, f"test-{et}", 92, LATENESS)
    assert watermark == agg.watermark
    mine = {k: acc for k, acc in cells.items() if k[1][1] == et}
    want = {(60, k): acc for k, acc in agg.open.items()} | {(3600, k): acc for k, acc in agg.hours.items()}
    assert any(width == 3600 for width, _k in want)  # the second hour is still open
    assert mine.keys() == want.keys()
    for k, acc in want.items():
        got = mine[k]
        assert (got.count, got.value_sum) == (acc.count, acc.value_sum)
        assert got.users.to_bytes() == acc.users.to_bytes()


def test_points_say_whether_they_are_final(stack, written):
    et, h0, events = written
    final = final_before(events)
    start, end = h0, h0 + timedelta(hours=3)
    (series,) = query(stack, et, start, end, "1m", final=final)
    flags = {p["t"]: p["final"] for p in series["points"]}
    assert flags == {t: t + timedelta(minutes=1) <= final for t in flags}
    assert True in flags.values() and False in flags.values()
    # A range ending before the final point is final throughout, even its ragged last bucket.
    (early,) = query(stack, et, start, h0 + timedelta(minutes=90, seconds=30), "15m", final=final)
    assert all(p["final"] for p in early["points"])
    (unknown,) = query(stack, et, start, end, "1h")  # no watermark known: nothing is final
    assert not any(p["final"] for p in unknown["points"])


def test_late_events_are_ledgered_once_and_counted_per_bucket(stack):
    et = f"late.{uuid.uuid4().hex[:8]}"
    h0 = datetime(2026, 3, 1, 12, tzinfo=UTC)
    agg = PartitionAggregator(93, allowed_lateness_s=60)
    agg.add([Event(f"{et}-a", et, h0 + timedelta(minutes=30), "web", "u1", 1.0)])
    agg.add([Event(f"{et}-late{i}", et, h0 + timedelta(minutes=i % 2, seconds=i), "web") for i in range(5)])
    flush = agg.flush(7)
    assert len(flush.late) == 5
    with rollup_store.connect(stack) as conn:
        rollup_store.write_flush(conn, f"test-{et}", flush)
        rollup_store.write_flush(conn, f"test-{et}", flush)  # a replay after a crash adds nothing
        stored = conn.execute("select count(*) from late_events where event_type = %s", (et,)).fetchone()[0]
    assert stored == 5
    metrics = ["count", "unique_users", "late_count"]
    q = aggregates.AggregateQuery(h0, h0 + timedelta(hours=1), "1m", metrics, [], [et], [])

    async def go():
        async with await psycopg.AsyncConnection.connect(stack.pg_dsn) as conn:
            return await aggregates.run(conn, q, has_hll=True)

    (series,) = asyncio.run(go())
    points = {p["t"] - h0: (p["count"], p["unique_users"], p["late_count"]) for p in series["points"]}
    # Buckets holding only late events appear with count 0; the on-time event has late_count 0.
    assert points == {timedelta(0): (0, 0, 3), timedelta(minutes=1): (0, 0, 2), timedelta(minutes=30): (1, 1, 0)}
