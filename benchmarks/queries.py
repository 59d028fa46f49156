"""/api/aggregate and /api/filtered_events latency, idle and beside ingest, and the answers' sizes.

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

from benchmarks.common import background_load, pct, report
from tally.auth.devissuer import bearer
from tally.events.schema import Event, encode_event
from tally.flush import RawBatch
from tally.settings import Settings, get_settings
from tally.sketch import Hll, hash_user
from tally.storage import raw_events, raw_writer, rollup_store


def seed_rollups(settings, prefix: str, start: datetime, days: int, series: int, partitions: int) -> int:
    """Minute and hour rows as the dataflow writes them: every series in every partition."""
    rng = random.Random(1)
    sketches = []
    for _ in range(64):
        h = Hll()
        h.add_hashes(hash_user(f"u{rng.randrange(500)}") for _ in range(5))
        sketches.append(h.to_bytes())
    cols = (
        "(bucket, event_type, source, kafka_partition, event_count, value_count, value_sum, value_min, value_max,"
        " users, final)"
    )
    hours = []
    n = 0
    with rollup_store.connect(settings) as conn, conn.cursor() as cur:
        with cur.copy(f"copy rollup_1m {cols} from stdin") as copy:
            for s in range(series):
                et, src = f"{prefix}.type{s // 4}", ["web", "ios", "android", "backend"][s % 4]
                for h in range(24 * days):
                    for p in range(partitions):
                        total = 0
                        for m in range(60):
                            c = rng.randrange(1, 50)
                            total += c
                            t = start + timedelta(hours=h, minutes=m)
                            copy.write_row((t, et, src, p, c, c, float(c), 0.0, 10.0, sketches[n % 64], True))
                            n += 1
                        hours.append(
                            (
                                start + timedelta(hours=h),
                                et,
                                src,
                                p,
                                total,
                                total,
                                float(total),
                                0.0,
                                10.0,
                                sketches[n % 64],
                                True,
                            )
                        )
        with cur.copy(f"copy rollup_1h {cols} from stdin") as copy:
            for row in hours:
                copy.write_row(row)
        rollup_store.bump_revision(conn)  # the days seeded were final already: API workers may have them cached
        conn.commit()
    return n + len(hours)


def seed_raw(settings, prefix: str, day: datetime, n: int) -> int:
    cluster = raw_events.cluster(settings)
    try:
        writer = raw_writer.RawEventWriter(cluster.connect(settings.cassandra_keyspace), settings)
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
            writer.write(RawBatch.of(raw), shard=i // 5000 % settings.kafka_partitions)
    finally:
        cluster.shutdown()
    return n


IDENTITY = {"Accept-Encoding": "identity"}
# What browsers and httpx send: the API answers zstd, the cheapest of the three at level 1.
COMPRESSED = {"Accept-Encoding": "gzip, deflate, br, zstd"}


def shapes(prefix: str, series: int, start: datetime, end: datetime) -> dict[str, tuple[str, list, dict]]:
    """Each query shape timed: the 30-day dashboard in both layouts, plain and compressed, with every
    metric, and a page of raw events of the last day, plain and filtered by attribute and source."""
    types = [f"{prefix}.type{i}" for i in range(max(1, series // 4))]
    agg = [("from", start.isoformat()), ("to", end.isoformat()), ("group_by", "event_type,source")]
    agg += [("event_type", t) for t in types]
    day = end - timedelta(days=1)
    raw = [("event_type", f"{prefix}.raw"), ("from", day.isoformat()), ("to", end.isoformat()), ("limit", "100")]
    return {
        "aggregate": ("/api/aggregate", [*agg, ("metrics", "count")], IDENTITY),
        "aggregate_zstd": ("/api/aggregate", [*agg, ("metrics", "count")], COMPRESSED),
        "aggregate_columns": ("/api/aggregate", [*agg, ("metrics", "count"), ("format", "columns")], IDENTITY),
        "aggregate_columns_zstd": ("/api/aggregate", [*agg, ("metrics", "count"), ("format", "columns")], COMPRESSED),
        "aggregate_all_metrics": ("/api/aggregate", [*agg, ("metrics", "count,sum,avg,unique_users")], IDENTITY),
        "filtered_page100": ("/api/filtered_events", raw, IDENTITY),
        "filtered_attr_source": ("/api/filtered_events", [*raw, ("attr.plan", "pro"), ("source", "ios")], IDENTITY),
    }


def timed(client: httpx.Client, asked: dict[str, tuple[str, list, dict]], n: int) -> dict[str, tuple[list, int]]:
    """Each shape n times, taking turns (drift falls on every shape alike): latencies, bytes sent."""
    out: dict[str, tuple[list, int]] = {name: ([], 0) for name in asked}
    for _ in range(n):
        for name, (path, params, headers) in asked.items():
            t0 = time.perf_counter()
            r = client.get(path, params=params, headers=headers)
            out[name][0].append(time.perf_counter() - t0)
            assert r.status_code == 200, r.text
            out[name] = (out[name][0], r.num_bytes_downloaded)
    return out


def figures(times: dict[str, tuple[list, int]], tag: str = "") -> dict:
    out = {}
    for name, (xs, size) in times.items():
        for p, label in ((50, "p50"), (95, "p95"), (99, "p99"), (99.9, "p999")):
            out[f"{tag}{name}_{label}_ms"] = round(pct(xs, p) * 1000, 1)
        out[f"{tag}{name}_bytes"] = size
    return out


def run(
    s: Settings,
    series: int = 100,
    days: int = 30,
    raw: int = 100_000,
    requests: int = 1000,
    seed_id: str | None = None,
    load_rate: float = 20_000,
) -> dict:
    """Every shape `requests` times without ingest, then as many times beside `load_rate` events/s of
    it; figures without a prefix are under load (the targets'), `idle_` ones without."""
    end = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    start = end - timedelta(days=days)
    # The days end today: data seeded on another day would leave the range's last days empty.
    prefix = seed_id or f"q{series}x{days}v2d{start:%Y%m%d}"
    client = httpx.Client(base_url=f"http://127.0.0.1:{s.api_port}", timeout=120, headers=bearer(s))
    probe = client.get(
        "/api/aggregate", params={"from": start.isoformat(), "to": end.isoformat(), "event_type": f"{prefix}.type0"}
    ).json()
    seeded = {}
    if not probe["series"]:  # seed once per prefix; later runs reuse the data
        t0 = time.perf_counter()
        seeded["queries_rollup_rows_seeded"] = seed_rollups(s, prefix, start, days, series, s.kafka_partitions)
        seeded["queries_raw_events_seeded"] = seed_raw(s, prefix, end - timedelta(days=1), raw)
        seeded["queries_seed_s"] = round(time.perf_counter() - t0, 1)
    asked = shapes(prefix, series, start, end)
    path, params, headers = asked["aggregate"]
    t0 = time.perf_counter()
    body = client.get(path, params=params, headers=headers).json()
    first = time.perf_counter() - t0  # cold if this API worker has not answered this shape yet
    idle = timed(client, asked, requests)
    with background_load(s, load_rate) as load:
        loaded = timed(client, asked, requests)
    return {
        **seeded,
        "queries_days": days,
        "queries_series": len(body["series"]),
        "queries_points": sum(len(x["points"]) for x in body["series"]),
        "queries_granularity": body["granularity"],
        "queries_requests_per_shape": requests,
        "queries_background_events_per_s": round(load["accepted"] / load["seconds"]) if load else 0,
        "aggregate_first_ms": round(first * 1000, 1),
        **figures(loaded),
        **figures(idle, "idle_"),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--series", type=int, default=100)
    ap.add_argument("--days", type=int, default=30)
    ap.add_argument("--raw-events", type=int, default=100_000)
    ap.add_argument("--requests", type=int, default=1000, help="of each shape, idle and under load")
    ap.add_argument("--load-rate", type=float, default=20_000, help="background ingest events/s (0: none)")
    ap.add_argument("--seed-id", default=None, help="prefix of the seeded event types; reuse to skip seeding")
    a = ap.parse_args()
    report("queries", run(get_settings(), a.series, a.days, a.raw_events, a.requests, a.seed_id, a.load_rate))


if __name__ == "__main__":
    main()
