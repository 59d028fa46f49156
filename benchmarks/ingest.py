"""Events/s accepted (202, acked by Kafka) by the API with 1,000-event gzip NDJSON bodies."""

from __future__ import annotations

import argparse
import asyncio
import gzip

from benchmarks.common import pct, report
from tally.loadgen import Generator, post_bodies
from tally.settings import Settings, get_settings


def run(s: Settings, duration_s: float, batch: int = 1000, concurrency: int = 16, bodies: int = 64) -> dict:
    gen = Generator(seed=1)
    # Pre-generated and pre-compressed: the load generator must not be what is measured.
    made = [gzip.compress(gen.body(batch)[0], compresslevel=1) for _ in range(bodies)]
    i = iter(range(10**12))

    def next_body() -> bytes:
        return made[next(i) % len(made)]

    url = f"http://127.0.0.1:{s.api_port}/api/events"
    stats = asyncio.run(post_bodies(url, next_body, batch, None, duration_s, concurrency))
    return {
        "ingest_events_per_body": batch,
        "ingest_concurrency": concurrency,
        "ingest_api_workers": s.api_workers,
        "ingest_seconds": round(stats.seconds, 1),
        "ingest_accepted": stats.accepted,
        "ingest_events_per_s": round(stats.accepted / stats.seconds),
        "ingest_request_p50_ms": round(pct(stats.latencies, 50) * 1000, 1),
        "ingest_request_p99_ms": round(pct(stats.latencies, 99) * 1000, 1),
        "ingest_responses": str(stats.statuses),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--duration", type=float, default=20)
    ap.add_argument("--batch", type=int, default=1000)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--bodies", type=int, default=64, help="distinct pre-generated bodies, reused round-robin")
    args = ap.parse_args()
    report("ingest", run(get_settings(), args.duration, args.batch, args.concurrency, args.bodies))


if __name__ == "__main__":
    main()
