"""Realistic synthetic events, pre-encoded into NDJSON bodies, and a sender that posts them at a rate.

Used by `tally send` (demos) and by the benchmarks; generating bodies ahead of time keeps the
load generator itself from being what is measured.
"""

from __future__ import annotations

import asyncio
import gzip
import random
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import httpx
import msgspec

from tally.auth.devissuer import bearer
from tally.settings import get_settings

EVENT_TYPES = [("page_view", 50), ("click", 25), ("add_to_cart", 10), ("purchase", 4), ("signup", 2), ("error", 9)]
SOURCES = [("web", 55), ("ios", 20), ("android", 20), ("backend", 5)]
COUNTRIES = ["us", "de", "fr", "in", "br", "jp", "gb", "ca"]
PLANS = ["free", "pro", "team"]


class Generator:
    def __init__(self, seed: int | None = None, users: int = 10_000, event_types: int | None = None):
        self.rng = random.Random(seed)
        self.run = uuid.UUID(int=self.rng.getrandbits(128)).hex[:10]
        self.n = 0
        self.users = users
        types = EVENT_TYPES if event_types is None else [(f"type_{i}", 1) for i in range(event_types)]
        self.types, self.type_w = zip(*types, strict=True)
        self.sources, self.source_w = zip(*SOURCES, strict=True)

    def event(self, ts: datetime) -> dict:
        rng = self.rng
        self.n += 1
        et = rng.choices(self.types, self.type_w)[0]
        e = {
            "event_id": f"{self.run}-{self.n}",
            "event_type": et,
            "timestamp": ts.isoformat().replace("+00:00", "Z"),
            "source": rng.choices(self.sources, self.source_w)[0],
            # A skewed population: a few users are very active, as in real traffic.
            "user_id": f"user-{int(self.users * rng.random() ** 2)}",
            "attributes": {"country": rng.choice(COUNTRIES), "plan": rng.choice(PLANS)},
        }
        if et in ("purchase", "add_to_cart"):
            e["value"] = round(rng.lognormvariate(3, 1), 2)
        elif et == "page_view":
            e["value"] = round(rng.expovariate(1 / 800), 1)  # load time, ms
        return e

    def body(self, n: int, now: datetime | None = None, spread_s: float = 1.0) -> tuple[bytes, list[dict]]:
        now = now or datetime.now(UTC)
        events = [self.event(now - timedelta(seconds=self.rng.random() * spread_s)) for _ in range(n)]
        enc = msgspec.json.Encoder()
        return b"\n".join(enc.encode(e) for e in events), events


@dataclass
class SendStats:
    sent: int = 0
    accepted: int = 0
    failed_requests: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)


async def post_bodies(
    url: str,
    next_body: Callable[[], bytes | None],
    events_per_body: int,
    rate: float | None,
    duration_s: float,
    concurrency: int = 8,
    gzipped: bool = True,
    on_accepted: Callable[[bytes], None] | None = None,
    auth: dict[str, str] | None = None,
) -> SendStats:
    """Post bodies from `next_body()` for `duration_s` or until it returns None, at `rate` events/s
    (None: as fast as possible); `on_accepted(body)` for each body answered 202. `auth`: the
    credentials' headers; unset, a development token of this process's settings."""
    stats = SendStats()
    if auth is None:
        auth = bearer(get_settings(), ["events:write"])
    headers = {"Content-Type": "application/x-ndjson", **auth}
    if gzipped:
        headers["Content-Encoding"] = "gzip"
    interval = events_per_body / rate if rate else 0.0
    t0 = time.monotonic()
    next_slot = [t0]

    async def worker(client: httpx.AsyncClient) -> None:
        while True:
            now = time.monotonic()
            if now - t0 >= duration_s:
                return
            if interval:
                slot = next_slot[0]
                next_slot[0] += interval
                if slot > now:
                    await asyncio.sleep(slot - now)
            body = next_body()
            if body is None:
                return
            started = time.monotonic()
            try:
                r = await client.post(url, content=body, headers=headers)
            except httpx.HTTPError:
                stats.failed_requests += 1
                continue
            stats.latencies.append(time.monotonic() - started)
            stats.statuses[r.status_code] = stats.statuses.get(r.status_code, 0) + 1
            stats.sent += events_per_body
            if r.status_code == 202:
                stats.accepted += r.json()["accepted"]
                if on_accepted is not None:
                    on_accepted(body)

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=30, limits=limits) as client:
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
    stats.seconds = time.monotonic() - t0
    return stats


def gzip_bodies(bodies: list[bytes]) -> list[bytes]:
    return [gzip.compress(b, compresslevel=1) for b in bodies]
