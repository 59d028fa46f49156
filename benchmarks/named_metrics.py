"""/api/aggregate latency of named metrics (dbt_project/'s semantic layer) beside the built-in ones.

Seeds rollups for `--sources` sources of this run's own, each with page views, purchases (with values)
and add-to-carts in every Kafka partition: minute rows for two days and hour rows for 31 days, up to
the last hour the stream has closed (never in open buckets, which belong to the dataflow). Then times,
grouped by source:
- a day at 1m: the last 24 hours, which no whole final day fits in (so never from the API's cache);
- 30 days at 1h: the last 30 days, whole final days from the cache, the rest from PostgreSQL;
each with the built-in `count`, with `count,sum,max`, and with named metrics (`purchases`,
`conversion`, `average_order_value`: three filtered aggregates and a ratio and a quotient per point).
The first request of each shape is reported apart (cold); the shapes take turns. Deletes what it
seeded unless --keep.

    .venv/bin/python -m benchmarks.named_metrics [--port 8000] [--sources 25] [--requests 50]
"""

from __future__ import annotations

import argparse
import random
import time
import uuid
from datetime import UTC, datetime, timedelta

import httpx

from benchmarks.common import pct, report
from tally.auth.devissuer import bearer
from tally.settings import Settings, get_settings
from tally.sketch import Hll, hash_user
from tally.storage import rollup_store

TYPES = ("page_view", "purchase", "add_to_cart")
SHAPES = {
    "builtin_count": "count",
    "builtin_count_sum_max": "count,sum,max",
    "named_3": "purchases,conversion,average_order_value",
    "named_3_and_count": "count,purchases,conversion,average_order_value",
}
_COLUMNS = (
    "(bucket, event_type, source, kafka_partition, event_count, value_count, value_sum, value_min, value_max,"
    " users, final)"
)


def closed_until(settings: Settings) -> datetime:
    """The start of the hour after the last one the stream has closed. Only closed hours are seeded:
    the dataflow reads the rows of open buckets back when it restarts and would take seeded rows for
    its own (and write their hour rows after this benchmark has deleted them)."""
    with rollup_store.connect(settings) as conn:
        (low,) = conn.execute(
            "select min(watermark) from stream_offsets where topic = %s", (settings.events_topic,)
        ).fetchone()
    if low is None:
        raise RuntimeError("the stream has no watermark yet: send some events first")
    final_before = low - timedelta(seconds=settings.allowed_lateness_s)
    return final_before.replace(minute=0, second=0, microsecond=0)


def seed(settings: Settings, sources: list[str], until: datetime) -> int:
    """Minute rows for the two days before `until`, hour rows for the 31 days before it."""
    rng = random.Random(3)
    users = Hll()
    users.add_hashes(hash_user(f"u{i}") for i in range(5))
    sketch = users.to_bytes()
    n = 0
    with rollup_store.connect(settings) as conn, conn.cursor() as cur:
        for table, start, step, end in (
            ("rollup_1m", until - timedelta(days=2), timedelta(minutes=1), until),
            ("rollup_1h", until - timedelta(days=31), timedelta(hours=1), until),
        ):
            scale = 60 if table == "rollup_1h" else 1
            with cur.copy(f"copy {table} {_COLUMNS} from stdin") as copy:
                t = start
                while t < end:
                    for source in sources:
                        for et in TYPES:
                            for p in range(settings.kafka_partitions):
                                count = rng.randrange(1, 20) * scale
                                vcount = count if et == "purchase" else 0
                                vsum = float(vcount * 12) if vcount else 0.0
                                vmin, vmax = (5.0, 99.0) if vcount else (None, None)
                                copy.write_row((t, et, source, p, count, vcount, vsum, vmin, vmax, sketch, True))
                                n += 1
                    t += step
        rollup_store.bump_revision(conn)  # the days seeded were final already: API workers may have them cached
        conn.commit()
    return n


def delete(settings: Settings, sources: list[str]) -> None:
    with rollup_store.connect(settings) as conn:
        for table in ("rollup_1m", "rollup_1h"):
            conn.execute(f"delete from {table} where source = any(%s)", (sources,))
        rollup_store.bump_revision(conn)
        conn.commit()


def timed(client: httpx.Client, shapes: dict[str, list], n: int) -> dict[str, tuple[float, list[float], int]]:
    """Per shape: (first request's seconds, the next n requests' seconds, points in the answer). The
    shapes take turns, so a change in the machine's load falls on all of them alike."""
    out: dict[str, tuple[float, list[float], int]] = {}
    for i in range(n + 1):
        for shape, params in shapes.items():
            t0 = time.perf_counter()
            r = client.get("/api/aggregate", params=params)
            took = time.perf_counter() - t0
            assert r.status_code == 200, r.text
            if i == 0:
                out[shape] = (took, [], sum(len(x["points"]) for x in r.json()["series"]))
            else:
                out[shape][1].append(took)
    return out


def run(s: Settings, port: int | None = None, n_sources: int = 25, requests: int = 50, keep: bool = False) -> dict:
    run_id = f"nmb{uuid.uuid4().hex[:6]}"
    sources = [f"{run_id}.src{i}" for i in range(n_sources)]
    now = datetime.now(UTC)
    client = httpx.Client(base_url=f"http://127.0.0.1:{port or s.api_port}", timeout=120, headers=bearer(s))
    known = client.get("/api/metrics")
    if known.status_code != 200 or "conversion" not in [m["name"] for m in known.json()["metrics"]]:
        raise RuntimeError("this API serves no named metrics (GET /api/metrics): start it with dbt_project/ parsed")
    t0 = time.perf_counter()
    figures: dict = {
        "metrics_rows_seeded": seed(s, sources, closed_until(s)),
        "metrics_seed_s": round(time.perf_counter() - t0, 1),
    }
    try:
        ranges = {
            "day_1m": (now - timedelta(days=1), now, "1m"),
            "30d_1h": (now - timedelta(days=30), now, "1h"),
        }
        for rname, (start, end, granularity) in ranges.items():
            base = [("from", start.isoformat()), ("to", end.isoformat()), ("granularity", granularity)]
            base += [("group_by", "source")] + [("source", x) for x in sources]
            shapes = {shape: [*base, ("metrics", metrics)] for shape, metrics in SHAPES.items()}
            for shape, (first, lat, points) in timed(client, shapes, requests).items():
                key = f"metrics_{rname}_{shape}"
                figures[f"{key}_points"] = points
                figures[f"{key}_first_ms"] = round(first * 1000, 1)
                figures[f"{key}_p50_ms"] = round(pct(lat, 50) * 1000, 1)
                figures[f"{key}_p99_ms"] = round(pct(lat, 99) * 1000, 1)
    finally:
        if not keep:
            delete(s, sources)
    return figures


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--port", type=int, default=None, help="the API's port (default: TALLY_API_PORT)")
    ap.add_argument("--sources", type=int, default=25)
    ap.add_argument("--requests", type=int, default=50)
    ap.add_argument("--keep", action="store_true", help="keep the seeded rows")
    a = ap.parse_args()
    report("named_metrics", run(get_settings(), a.port, a.sources, a.requests, a.keep))


if __name__ == "__main__":
    main()
