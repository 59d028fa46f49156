"""Sustained end-to-end rate: events accepted by the API until every one is counted, exactly."""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC, datetime, timedelta

import httpx

from benchmarks.bodies import BodyFactory
from benchmarks.components import Sampler
from tally.loadgen import post_bodies
from tally.settings import Settings


def counted(client: httpx.Client, types: list[str], start: datetime) -> int:
    params = [
        ("from", (start - timedelta(minutes=2)).isoformat()),
        ("to", (datetime.now(UTC) + timedelta(minutes=2)).isoformat()),
        ("granularity", "1h"),
    ]
    params += [("event_type", t) for t in types]
    body = client.get("/api/aggregate", params=params).json()
    return sum(p["count"] for s in body["series"] for p in s["points"])


def run(
    settings: Settings,
    duration_s: float,
    rate: float | None = None,
    concurrency: int = 8,
    events_per_body: int = 1000,
    drain_timeout_s: float = 300,
) -> dict:
    prefix = f"e2e{uuid.uuid4().hex[:6]}"
    factory = BodyFactory(prefix, events_per_body)
    types = factory.event_types
    base = f"http://127.0.0.1:{settings.api_port}"
    start = datetime.now(UTC)
    sampler = Sampler()
    stats = asyncio.run(
        post_bodies(f"{base}/api/events", factory.next, events_per_body, rate, duration_s, concurrency, gzipped=False)
    )
    sent_done = time.monotonic()
    with httpx.Client(base_url=base, timeout=60) as client:
        n = counted(client, types, start)
        while n < stats.accepted and time.monotonic() - sent_done < drain_timeout_s:
            time.sleep(0.5)
            n = counted(client, types, start)
    drain = time.monotonic() - sent_done
    usage = sampler.stop()
    return {
        "e2e_seconds_sending": round(stats.seconds, 1),
        "e2e_accepted": stats.accepted,
        "e2e_counted": n,
        "e2e_exact": n == stats.accepted,
        "e2e_drain_after_send_s": round(drain, 1),
        "e2e_events_per_s": round(stats.accepted / (stats.seconds + drain)),
        "e2e_responses": str(stats.statuses),
        **{f"e2e_{k}": v for k, v in usage.items()},
    }
