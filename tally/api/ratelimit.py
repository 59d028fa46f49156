"""Per-client rate limits: events ingested and queries asked, each a sliding window (the `limits`
library), answered 429 with Retry-After past it and counted in tally_api_rate_limited_total.

A client is who the credentials say (a token's subject, an API key's id), or its address with auth
off. The windows live where `TALLY_RATE_LIMIT_STORAGE` says: `memory://` (the default) keeps one per
API worker, so a client whose connections spread over the workers may get up to workers x the limit;
a shared `redis://` or `memcached://` makes the limit exact across workers and replicas.
"""

from __future__ import annotations

import math
import time

from fastapi import Depends, Request
from limits import RateLimitItem, parse
from limits.aio.strategies import SlidingWindowCounterRateLimiter
from limits.storage import storage_from_string

from tally.api import metrics
from tally.settings import Settings


class RateLimited(Exception):
    """Past a client's limit: answered 429 with Retry-After (whole seconds until room is back)."""

    def __init__(self, what: str, limit: str, retry_after_s: int):
        super().__init__(f"{what}: more than {limit} for this client; retry after {retry_after_s} s")
        self.what = what
        self.retry_after_s = retry_after_s


class Limits:
    """One per worker (app.state.limits)."""

    def __init__(self, settings: Settings):
        self.events: RateLimitItem | None = parse(settings.rate_limit_events) if settings.rate_limit_events else None
        self.queries: RateLimitItem | None = parse(settings.rate_limit_queries) if settings.rate_limit_queries else None
        # The library's asyncio storages are the same URIs with an async+ scheme.
        self.limiter = SlidingWindowCounterRateLimiter(storage_from_string(f"async+{settings.rate_limit_storage}"))

    async def take(self, item: RateLimitItem | None, what: str, client: str, cost: int = 1) -> None:
        if item is None or cost <= 0:
            return
        if cost > item.amount:  # can never fit in one window, however long the client waits
            metrics.RATE_LIMITED.labels(what).inc()
            raise RateLimited(what, f"{item} (this request alone is {cost}: send smaller bodies)", 1)
        if await self.limiter.hit(item, what, client, cost=cost):
            return
        stats = await self.limiter.get_window_stats(item, what, client)
        metrics.RATE_LIMITED.labels(what).inc()
        raise RateLimited(what, str(item), max(1, math.ceil(stats.reset_time - time.time())))


def client_of(request: Request) -> str:
    """Who to count a request against: the principal the scope check found, else the address."""
    principal = getattr(request.state, "principal", None)
    if principal is not None and principal.via != "open":
        return principal.subject
    return request.client.host if request.client else "unknown"


async def queries(request: Request) -> None:
    """A dependency of the query routes (after the scope check, which names the client)."""
    await request.app.state.limits.take(request.app.state.limits.queries, "queries", client_of(request))


async def events(request: Request, n: int) -> None:
    """Called by ingest once it knows how many valid events the body holds, before producing any."""
    await request.app.state.limits.take(request.app.state.limits.events, "events", client_of(request), n)


QueryLimit = Depends(queries)
