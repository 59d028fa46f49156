"""Final days answered from the cache give byte for byte the answer PostgreSQL gives."""

from __future__ import annotations

import asyncio
import random
import uuid
from datetime import UTC, datetime, timedelta, timezone

import msgspec
import psycopg
import pytest

from tally.aggregator import PartitionAggregator
from tally.events.schema import Event
from tally.storage import aggregates, rollup_store
from tally.storage.aggregate_cache import FinalDays
from tally.storage.layouts import Columns

D0 = datetime(2026, 2, 1, tzinfo=UTC)


@pytest.fixture(scope="module")
def event_type(stack):
    """Four days of events for a fresh event type, in two partitions' rows, flushed as the dataflow does."""
    rng = random.Random(5)
    et = f"cache.{uuid.uuid4().hex[:8]}"
    events = sorted(
        (
            Event(
                f"{et}-{i}",
                et,
                D0 + timedelta(seconds=rng.uniform(0, 4 * 86400)),
                rng.choice(["web", "ios", "api"]),
                f"u{rng.randrange(500)}",
                float(rng.randrange(1000)),
            )
            for i in range(8000)
        ),
        key=lambda e: e.timestamp,
    )
    with rollup_store.connect(stack) as conn:
        for partition in (80, 81):
            agg = PartitionAggregator(partition, allowed_lateness_s=600)  # all but the last hour close
            mine = events[partition % 2 :: 2]
            for i in range(0, len(mine), 1000):
                agg.add(mine[i : i + 1000])
                rollup_store.write_flush(conn, f"test-{et}", agg.flush(i))
    return et


def answers(stack, queries, cache: FinalDays, final_before):
    async def go():
        async with await psycopg.AsyncConnection.connect(stack.pg_dsn) as conn:
            out = []
            for q in queries:
                direct = msgspec.json.encode(await aggregates.run(conn, q, True, final_before))
                out.append((direct, await cache.series_json(conn, q, True, final_before)))
            return out

    return asyncio.run(go())


@pytest.mark.parametrize(
    ("granularity", "group_by", "metrics"),
    [
        ("1h", ["source"], ["count", "sum", "min", "max", "avg", "unique_users"]),
        ("15m", [], ["count"]),
        ("1d", ["event_type", "source"], ["count", "unique_users"]),
    ],
)
def test_cached_days_splice_into_the_same_answer(stack, event_type, granularity, group_by, metrics):
    plus2 = timezone(timedelta(hours=2))
    queries = [
        aggregates.AggregateQuery(start, end, granularity, metrics, group_by, [event_type], [])
        for start, end in [
            (D0 + timedelta(hours=5, minutes=30), D0 + timedelta(days=3, hours=20)),  # ragged both ends
            (D0, D0 + timedelta(days=4)),  # whole days only
            ((D0 + timedelta(days=1)).astimezone(plus2), D0 + timedelta(days=2, hours=1)),  # another offset
        ]
    ]
    cache = FinalDays()
    final_before = D0 + timedelta(days=2, hours=7)  # days 0 and 1 are final, the rest is live
    cold = answers(stack, queries, cache, final_before)
    assert cache.misses > 0 and len(cache.days) == 2
    warm = answers(stack, queries, cache, final_before)
    assert cache.hits > 0 and cache.spans  # the whole days of each query, merged once and kept
    for direct, cached in cold + warm:
        assert msgspec.json.decode(direct)  # the range has data
        assert cached == direct


def as_columns(rows_answer: bytes, metrics: list[str]) -> list[dict]:
    """The default answer transposed by hand: what format=columns must hold."""
    out = []
    for s in msgspec.json.decode(rows_answer):
        finals = [p["final"] for p in s["points"]]
        assert finals == sorted(finals, reverse=True)  # the final points lead
        series = {"group": s["group"], "t": [int(datetime.fromisoformat(p["t"]).timestamp()) for p in s["points"]]}
        series.update({m: [p[m] for p in s["points"]] for m in metrics})
        series["final"] = sum(finals)
        out.append(series)
    return out


@pytest.mark.parametrize("granularity", ["1h", "1d"])
def test_the_columns_layout_holds_the_same_figures_cold_and_from_the_cache(stack, event_type, granularity):
    metrics = ["count", "sum", "min", "max", "avg", "unique_users"]
    q = aggregates.AggregateQuery(
        D0 + timedelta(hours=5, minutes=30), D0 + timedelta(days=3, hours=20), granularity, metrics, ["source"],
        [event_type], [],
    )  # fmt: skip
    final_before = D0 + timedelta(days=2, hours=7)
    cache = FinalDays()

    async def go():
        async with await psycopg.AsyncConnection.connect(stack.pg_dsn) as conn:
            direct = msgspec.json.encode(await aggregates.run(conn, q, True, final_before))
            cold = await cache.series_json(conn, q, True, final_before, how=Columns(metrics))
            warm = await cache.series_json(conn, q, True, final_before, how=Columns(metrics))
            return direct, cold, warm

    direct, cold, warm = asyncio.run(go())
    assert cache.misses == cache.hits > 0  # the final whole days: read once, then from the cache
    want = as_columns(direct, metrics)
    assert any(0 < s["final"] < len(s["t"]) for s in want)  # final and open points both in the range
    assert msgspec.json.decode(cold) == want
    assert warm == cold


def test_nothing_is_cached_before_every_partition_has_a_watermark(stack, event_type):
    q = aggregates.AggregateQuery(D0, D0 + timedelta(days=4), "1h", ["count"], [], [event_type], [])
    cache = FinalDays()
    ((direct, cached),) = answers(stack, [q], cache, None)
    assert cached == direct and not cache.days


def test_the_cache_stays_within_its_point_budget(stack, event_type):
    q = aggregates.AggregateQuery(D0, D0 + timedelta(days=4), "15m", ["count"], ["source"], [event_type], [])
    cache = FinalDays(max_points=500)  # a day at 15m for 3 sources is ~288 points
    ((direct, cached),) = answers(stack, [q], cache, D0 + timedelta(days=4))
    assert cached == direct
    assert cache.points <= 500 and len(cache.days) == 1


def test_rewriting_final_days_with_a_new_revision_empties_the_cache(stack, event_type):
    """What a correction step or backfill does: rewrite a final day's rows and bump the revision."""
    q = aggregates.AggregateQuery(D0, D0 + timedelta(days=2), "1d", ["count"], [], [event_type], [])
    final_before = D0 + timedelta(days=2)

    async def answer(cache: FinalDays) -> list:
        async with await psycopg.AsyncConnection.connect(stack.pg_dsn) as conn:
            state = await aggregates.stream_state(conn, "no-such-topic", 1, timedelta(0))
            cache.check_revision(state.revision)
            return msgspec.json.decode(await cache.series_json(conn, q, True, final_before))

    cache = FinalDays()
    before = asyncio.run(answer(cache))
    assert len(cache.days) == 2
    with rollup_store.connect(stack) as conn:
        agg = PartitionAggregator(82, allowed_lateness_s=0)
        agg.add([Event(f"{event_type}-fix", event_type, D0 + timedelta(hours=1), "web", None, None)])
        agg.watermark = int((D0 + timedelta(days=3)).timestamp())  # the minute is final when written
        rollup_store.write_flush(conn, f"test-{event_type}-fix", agg.flush(1))
        rollup_store.bump_revision(conn)
        conn.commit()
    after = asyncio.run(answer(cache))
    assert after[0]["points"][0]["count"] == before[0]["points"][0]["count"] + 1
    assert after[0]["points"][1] == before[0]["points"][1]


def test_concurrent_requests_while_days_are_evicted_and_revisions_bump_never_fail(stack, event_type):
    # Requests interleave at every await: one fills (and evicts, the budget holding about a day)
    # while another is between counting a day as a hit and splicing it, and the revision moves
    # under both. Every answer must still be the direct one.
    queries = [
        aggregates.AggregateQuery(
            D0 + timedelta(hours=h), D0 + timedelta(days=4), g, ["count"], ["source"], [event_type], []
        )
        for h in (0, 7, 30)
        for g in ("15m", "1h")
    ]
    final_before = D0 + timedelta(days=4)

    async def go():
        cache = FinalDays(max_points=400)
        async with await psycopg.AsyncConnection.connect(stack.pg_dsn) as direct_conn:
            direct = [msgspec.json.encode(await aggregates.run(direct_conn, q, True, final_before)) for q in queries]

        async def client(k: int) -> list[bool]:
            async with await psycopg.AsyncConnection.connect(stack.pg_dsn) as conn:
                out = []
                for i in range(12):
                    j = (k + i) % len(queries)
                    revision = (k * i) % 3  # requests disagree on the revision, as around a correction
                    got = await cache.series_json(conn, queries[j], True, final_before, revision)
                    out.append(got == direct[j])
                return out

        results = await asyncio.gather(*(client(k) for k in range(6)))
        return cache, [ok for r in results for ok in r]

    cache, oks = asyncio.run(go())
    assert all(oks) and len(oks) == 72
    assert cache.points <= 400 or len(cache.days) == 1
