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

from benchmarks.common import background_load, pct, report
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


def timed(client: httpx.Client, path: str, params, n: int) -> list[float]:
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        r = client.get(path, params=params)
        out.append(time.perf_counter() - t0)
        assert r.status_code == 200, r.text
    return out


def run(
    s: Settings,
    series: int = 100,
    days: int = 30,
    raw: int = 100_000,
    requests: int = 200,
    seed_id: str | None = None,
    load_rate: float = 20_000,
) -> dict:
    end = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    start = end - timedelta(days=days)
    prefix = seed_id or f"q{series}x{days}v2"
    client = httpx.Client(base_url=f"http://127.0.0.1:{s.api_port}", timeout=120)
    probe = client.get(
        "/api/aggregate", params={"from": start.isoformat(), "to": end.isoformat(), "event_type": f"{prefix}.type0"}
    ).json()
    seeded = {}
    if not probe["series"]:  # seed once per prefix; later runs reuse the data
        t0 = time.perf_counter()
        seeded["queries_rollup_rows_seeded"] = seed_rollups(s, prefix, start, days, series, s.kafka_partitions)
        seeded["queries_raw_events_seeded"] = seed_raw(s, prefix, end - timedelta(days=1), raw)
        seeded["queries_seed_s"] = round(time.perf_counter() - t0, 1)
    types = [f"{prefix}.type{i}" for i in range(max(1, series // 4))]
    agg = [
        ("from", start.isoformat()),
        ("to", end.isoformat()),
        ("group_by", "event_type,source"),
        ("metrics", "count"),
    ] + [("event_type", t) for t in types]
    day = end - timedelta(days=1)
    raw_q = {"event_type": f"{prefix}.raw", "from": day.isoformat(), "to": end.isoformat(), "limit": "100"}
    with background_load(s, load_rate) as load:
        t0 = time.perf_counter()
        body = client.get("/api/aggregate", params=agg).json()
        first = time.perf_counter() - t0  # cold if this API worker has not answered this shape yet
        agg_lat = timed(client, "/api/aggregate", agg, requests)
        all_metrics = [p for p in agg if p[0] != "metrics"] + [("metrics", "count,sum,avg,unique_users")]
        all_lat = timed(client, "/api/aggregate", all_metrics, max(5, requests // 10))
        raw_lat = timed(client, "/api/filtered_events", raw_q, requests)
        filt_lat = timed(client, "/api/filtered_events", {**raw_q, "attr.plan": "pro", "source": "ios"}, requests)

    def ms(xs, p):
        return round(pct(xs, p) * 1000, 1)

    return {
        **seeded,
        "queries_days": days,
        "queries_series": len(body["series"]),
        "queries_points": sum(len(x["points"]) for x in body["series"]),
        "queries_granularity": body["granularity"],
        "queries_background_events_per_s": round(load["accepted"] / load["seconds"]) if load else 0,
        "aggregate_first_ms": round(first * 1000, 1),
        "aggregate_p50_ms": ms(agg_lat, 50),
        "aggregate_p99_ms": ms(agg_lat, 99),
        "aggregate_all_metrics_p50_ms": ms(all_lat, 50),
        "filtered_page100_p50_ms": ms(raw_lat, 50),
        "filtered_page100_p99_ms": ms(raw_lat, 99),
        "filtered_attr_source_p50_ms": ms(filt_lat, 50),
        "filtered_attr_source_p99_ms": ms(filt_lat, 99),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--series", type=int, default=100)
    ap.add_argument("--days", type=int, default=30)
    ap.add_argument("--raw-events", type=int, default=100_000)
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--load-rate", type=float, default=20_000, help="background ingest events/s (0: none)")
    ap.add_argument("--seed-id", default=None, help="prefix of the seeded event types; reuse to skip seeding")
    a = ap.parse_args()
    report("queries", run(get_settings(), a.series, a.days, a.raw_events, a.requests, a.seed_id, a.load_rate))


if __name__ == "__main__":
    main()
