"""Time from the API's 202 to the event being counted in /api/aggregate, under background load."""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid
from datetime import UTC, datetime, timedelta

import httpx

from benchmarks.bodies import BodyFactory
from benchmarks.common import pct, report
from tally.auth.devissuer import bearer
from tally.loadgen import post_bodies
from tally.settings import Settings, get_settings


async def probe(client: httpx.AsyncClient, run: str, i: int) -> float:
    now = datetime.now(UTC)
    event = {
        "event_id": f"{run}-{i}",
        "event_type": "bench.freshness",
        "timestamp": now.isoformat(),
        "source": f"{run}-{i}",
    }
    r = await client.post("/api/events", json=event)
    assert r.status_code == 202, r.text
    accepted = time.monotonic()
    params = {
        "from": (now - timedelta(minutes=1)).isoformat(),
        "to": (now + timedelta(minutes=1)).isoformat(),
        "event_type": "bench.freshness",
        "source": f"{run}-{i}",
    }
    while time.monotonic() - accepted < 60:
        body = (await client.get("/api/aggregate", params=params)).json()
        if sum(p["count"] for s in body["series"] for p in s["points"]) == 1:
            return time.monotonic() - accepted
        await asyncio.sleep(0.02)
    raise RuntimeError(f"probe {i} not visible after 60 s")


def run(s: Settings, probes: int, every: float = 0.25, load_rate: float = 5000, keys: int = 400) -> dict:
    return asyncio.run(_run(s, argparse.Namespace(probes=probes, every=every, load_rate=load_rate, keys=keys)))


async def _run(s: Settings, args) -> dict:
    base = f"http://127.0.0.1:{s.api_port}"
    # Templated bodies (benchmarks.bodies): generating 20 K events/s in Python would itself eat a core.
    # x 4 sources = the active (event_type, source) keys.
    factory = BodyFactory(f"fr{uuid.uuid4().hex[:6]}", 1000, shapes=16, event_types=max(1, args.keys // 4))
    # The load lasts about as long as the probes (each waits up to ~2 s for visibility).
    load_s = args.probes * (args.every + 2.0)
    load = (
        asyncio.create_task(
            post_bodies(f"{base}/api/events", factory.next, 1000, args.load_rate, load_s, 4, gzipped=False)
        )
        if args.load_rate
        else None
    )
    run_id = uuid.uuid4().hex[:8]
    latencies = []
    async with httpx.AsyncClient(base_url=base, timeout=30, headers=bearer(s)) as client:
        for i in range(args.probes):
            latencies.append(await probe(client, run_id, i))
            await asyncio.sleep(args.every)
    stats = await load if load else None
    return {
        "freshness_probes": len(latencies),
        "freshness_active_keys": args.keys,
        "freshness_background_events_per_s": round(stats.accepted / stats.seconds) if stats else 0,
        "freshness_p50_s": round(pct(latencies, 50), 3),
        "freshness_p95_s": round(pct(latencies, 95), 3),
        "freshness_p99_s": round(pct(latencies, 99), 3),
        "freshness_max_s": round(max(latencies), 3),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--probes", type=int, default=60)
    ap.add_argument("--every", type=float, default=0.25, help="seconds between probes")
    ap.add_argument("--load-rate", type=float, default=5000, help="background events/s (0: none)")
    ap.add_argument("--keys", type=int, default=400, help="active (event_type, source) keys in the background load")
    a = ap.parse_args()
    report("freshness", run(get_settings(), a.probes, a.every, a.load_rate, a.keys))


if __name__ == "__main__":
    main()
