"""Events/s accepted (202, acked by Kafka) by the API with 1,000-event gzip NDJSON bodies."""

from __future__ import annotations

import argparse
import asyncio
import gzip

from benchmarks.common import pct, report
from tally.loadgen import Generator, post_bodies
from tally.settings import get_settings


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--duration", type=float, default=20)
    ap.add_argument("--batch", type=int, default=1000)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--bodies", type=int, default=64, help="distinct pre-generated bodies, reused round-robin")
    args = ap.parse_args()
    s = get_settings()
    gen = Generator(seed=1)
    # Pre-generated and pre-compressed: the load generator must not be what is measured.
    bodies = [gzip.compress(gen.body(args.batch)[0], compresslevel=1) for _ in range(args.bodies)]
    i = iter(range(10**12))

    def next_body() -> bytes:
        return bodies[next(i) % len(bodies)]

    url = f"http://127.0.0.1:{s.api_port}/api/events"
    stats = asyncio.run(post_bodies(url, next_body, args.batch, None, args.duration, args.concurrency))
    report(
        "ingest",
        {
            "events_per_body": args.batch,
            "concurrency": args.concurrency,
            "api_workers": s.api_workers,
            "seconds": round(stats.seconds, 1),
            "accepted": stats.accepted,
            "accepted_events_per_s": round(stats.accepted / stats.seconds),
            "request_p50_ms": round(pct(stats.latencies, 50) * 1000, 1),
            "request_p99_ms": round(pct(stats.latencies, 99) * 1000, 1),
            "statuses": str(stats.statuses),
        },
    )


if __name__ == "__main__":
    main()
