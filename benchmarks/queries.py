"""/api/aggregate and /api/filtered_events latency over a day of data.

Seeds (once per --seed-id) a day of minute rollups for `--series` (event_type, source) series
straight into the rollup table, as the dataflow would have written them over 4 partitions, and a
day of raw events into Cassandra; then times the two routes.
"""

from __future__ import annotations

import argparse
import random
import time
from datetime import UTC, datetime, timedelta

import httpx

from benchmarks.common import pct, report
from tally.events.schema import Event, encode_event
from tally.settings import get_settings
from tally.sketch import Hll, hash_user
from tally.storage import raw_events, rollups


def seed_rollups(settings, prefix: str, day: datetime, series: int, partitions: int) -> int:
    rng = random.Random(1)
    rows = []
    for s in range(series):
        et, src = f"{prefix}.type{s // 4}", ["web", "ios", "android", "backend"][s % 4]
        for m in range(1440):
            for p in range(partitions):
                h = Hll()
                h.add_hashes(hash_user(f"u{rng.randrange(500)}") for _ in range(5))
                n = rng.randrange(1, 50)
                rows.append((day + timedelta(minutes=m), et, src, p, n, n, float(n), 0.0, 10.0, h.to_bytes(), True))
    with rollups.connect(settings) as conn, conn.cursor() as cur:
        with cur.copy(
            "copy rollup_1m (bucket, event_type, source, kafka_partition, event_count, value_count, value_sum,"
            " value_min, value_max, users, final) from stdin"
        ) as copy:
            for r in rows:
                copy.write_row(r)
        conn.commit()
    return len(rows)


def seed_raw(settings, prefix: str, day: datetime, n: int) -> int:
    cluster = raw_events.cluster(settings)
    try:
        writer = raw_events.RawEventWriter(cluster.connect(settings.cassandra_keyspace), settings)
        rng = random.Random(2)
        events = [
            Event(
                f"{prefix}-{i}",
                f"{prefix}.raw",
                day + timedelta(seconds=rng.uniform(0, 86400)),
                rng.choice(["web", "ios"]),
                f"u{rng.randrange(1000)}",
                float(i),
                {"plan": rng.choice(["free", "pro"])},
            )
            for i in range(n)
        ]
        for i in range(0, n, 5000):
            raw = [(i + j, e, encode_event(e)) for j, e in enumerate(events[i : i + 5000])]
            writer.write(raw, shard=i // 5000 % settings.kafka_partitions)
    finally:
        cluster.shutdown()
    return n


def timed(client: httpx.Client, path: str, params, n: int) -> list[float]:
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        r = client.get(path, params=params)
        out.append(time.perf_counter() - t0)
        assert r.status_code == 200, r.text
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--series", type=int, default=100)
    ap.add_argument("--raw-events", type=int, default=100_000)
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--seed-id", default="qbench", help="prefix of the seeded event types; reuse to skip seeding")
    args = ap.parse_args()
    s = get_settings()
    day = (datetime.now(UTC) - timedelta(days=3)).replace(hour=0, minute=0, second=0, microsecond=0)
    prefix = args.seed_id
    client = httpx.Client(base_url=f"http://127.0.0.1:{s.api_port}", timeout=60)
    probe = client.get(
        "/api/aggregate",
        params={"from": day.isoformat(), "to": (day + timedelta(days=1)).isoformat(), "event_type": f"{prefix}.type0"},
    ).json()
    seeded = {}
    if not probe["series"]:
        t0 = time.perf_counter()
        seeded["rollup_rows_seeded"] = seed_rollups(s, prefix, day, args.series, s.kafka_partitions)
        seeded["raw_events_seeded"] = seed_raw(s, prefix, day, args.raw_events)
        seeded["seed_s"] = round(time.perf_counter() - t0, 1)
    types = [f"{prefix}.type{i}" for i in range(args.series // 4)]
    agg = [
        ("from", day.isoformat()),
        ("to", (day + timedelta(days=1)).isoformat()),
        ("group_by", "event_type,source"),
        ("metrics", "count,sum,avg,unique_users"),
    ] + [("event_type", t) for t in types]
    body = client.get("/api/aggregate", params=agg).json()
    points = sum(len(x["points"]) for x in body["series"])
    agg_lat = timed(client, "/api/aggregate", agg, args.requests)
    count_only = [p for p in agg if p[0] != "metrics"] + [("metrics", "count")]
    count_lat = timed(client, "/api/aggregate", count_only, args.requests)
    raw = {
        "event_type": f"{prefix}.raw",
        "from": day.isoformat(),
        "to": (day + timedelta(days=1)).isoformat(),
        "limit": "100",
    }
    raw_lat = timed(client, "/api/filtered_events", raw, args.requests)
    filtered = {**raw, "attr.plan": "pro", "source": "ios"}
    filt_lat = timed(client, "/api/filtered_events", filtered, args.requests)
    ms = lambda xs, p: round(pct(xs, p) * 1000, 1)  # noqa: E731
    report(
        "queries",
        {
            **seeded,
            "aggregate_series": len(body["series"]),
            "aggregate_points": points,
            "granularity": body["granularity"],
            "aggregate_all_metrics_p50_ms": ms(agg_lat, 50),
            "aggregate_all_metrics_p99_ms": ms(agg_lat, 99),
            "aggregate_count_p50_ms": ms(count_lat, 50),
            "aggregate_count_p99_ms": ms(count_lat, 99),
            "filtered_page100_p50_ms": ms(raw_lat, 50),
            "filtered_page100_p99_ms": ms(raw_lat, 99),
            "filtered_attr_source_p50_ms": ms(filt_lat, 50),
            "filtered_attr_source_p99_ms": ms(filt_lat, 99),
        },
    )


if __name__ == "__main__":
    main()
