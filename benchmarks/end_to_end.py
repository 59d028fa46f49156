"""Sustained end-to-end rate: events accepted by the API until every one is counted, exactly."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta

import httpx

from benchmarks import catchup
from benchmarks.bodies import BodyFactory
from benchmarks.components import Sampler
from tally.auth.devissuer import bearer
from tally.loadgen import post_bodies
from tally.settings import Settings


def counted(client: httpx.Client, types: list[str], start: datetime) -> Counter:
    """Events counted per (minute, event_type, source)."""
    params = [
        ("from", (start - timedelta(minutes=2)).isoformat()),
        ("to", (datetime.now(UTC) + timedelta(minutes=2)).isoformat()),
        ("granularity", "1m"),
        ("group_by", "event_type,source"),
    ]
    params += [("event_type", t) for t in types]
    body = client.get("/api/aggregate", params=params).json()
    out: Counter = Counter()
    for s in body["series"]:
        for p in s["points"]:
            minute = datetime.fromisoformat(p["t"]).astimezone(UTC).strftime("%Y-%m-%dT%H:%M")
            out[(minute, s["group"]["event_type"], s["group"]["source"])] += p["count"]
    return out


def run(
    settings: Settings,
    duration_s: float,
    rate: float | None = None,
    concurrency: int = 8,
    events_per_body: int = 1000,
    drain_timeout_s: float = 300,
    keys: int | None = None,
) -> dict:
    """`keys`: about this many (event_type, source) keys a minute (event types uniform, sources
    weighted as in the demo, so the figure reported is the count actually seen); None: the demo's."""
    prefix = f"e2e{uuid.uuid4().hex[:6]}"
    if keys is None:
        factory = BodyFactory(prefix, events_per_body)
    else:
        factory = BodyFactory(prefix, events_per_body, shapes=max(16, keys // 250), event_types=max(1, keys // 4))
    types = factory.event_types
    base = f"http://127.0.0.1:{settings.api_port}"
    start = datetime.now(UTC)
    sampler = Sampler()
    truth: Counter = Counter()

    def accepted(body: bytes) -> None:
        truth.update(factory.cells(body))

    url = f"{base}/api/events"
    send = post_bodies(url, factory.next, events_per_body, rate, duration_s, concurrency, False, accepted)
    stats = asyncio.run(send)
    sent_done = time.monotonic()
    with httpx.Client(base_url=base, timeout=120, headers=bearer(settings)) as client:
        if keys is None:
            cells = counted(client, types, start)
            while cells.total() < stats.accepted and time.monotonic() - sent_done < drain_timeout_s:
                time.sleep(0.5)
                cells = counted(client, types, start)
            drain = time.monotonic() - sent_done
        else:
            # Thousands of event types do not fit one query's filter: wait for the dataflow to
            # commit the topic's end (rows are visible with that commit), then count minute by minute.
            catchup.wait_caught_up(settings, drain_timeout_s)
            drain = time.monotonic() - sent_done
            cells = catchup.counted(client, prefix, sorted({m for m, _t, _s in truth}))
    usage = sampler.stop()
    return {
        "e2e_seconds_sending": round(stats.seconds, 1),
        "e2e_accepted": stats.accepted,
        "e2e_counted": cells.total(),
        # Exact: every (minute, event_type, source) cell equals what the accepted bodies held.
        "e2e_exact": cells == truth,
        "e2e_cells": len(truth),
        "e2e_keys_per_minute": round(len(truth) / max(1, len({m for m, _t, _s in truth}))),
        "e2e_drain_after_send_s": round(drain, 1),
        "e2e_events_per_s": round(stats.accepted / (stats.seconds + drain)),
        "e2e_responses": str(stats.statuses),
        **{f"e2e_{k}": v for k, v in usage.items()},
    }
