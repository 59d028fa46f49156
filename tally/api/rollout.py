"""Staged rollout: which system answers an /api/aggregate request, and whether the two agree.

A share of requests (TALLY_LEGACY_READ_SHARE) is answered from the legacy store, the rest by Tally;
requests for metrics only Tally has (unique users, late counts, named metrics) are always Tally's.
Every answer says who gave it in the X-Answered-By header and is counted per system. With
TALLY_LEGACY_SHADOW the other system is asked too, after the answer is sent, and the final
points both have are compared (count exactly, sum to 1e-9 relative): the phase in which both run
and are compared before clients move. If the legacy store fails, Tally answers instead (counted),
so the move never costs a client an answer Tally could give.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

import msgspec
from prometheus_client import Counter, Histogram

from tally.legacy.compare import relative
from tally.legacy.store import SUPPORTED_METRICS
from tally.settings import Settings
from tally.storage.aggregates import AggregateQuery

log = logging.getLogger("tally.rollout")

HEADER = "X-Answered-By"
ANSWERS = Counter(
    "tally_api_aggregate_answers_total", "/api/aggregate answers by the system that gave them", ["system"]
)
SECONDS = Histogram(
    "tally_api_aggregate_seconds",
    "Time to answer /api/aggregate, by the system that answered",
    ["system"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
FALLBACKS = Counter("tally_rollout_fallbacks_total", "Requests routed to the legacy store that Tally answered")
SHADOW = Counter(
    "tally_rollout_shadow_total",
    "Shadow comparisons: match, differ, error, or skipped (nothing final to compare, or too many in flight)",
    ["result"],
)
SUM_TOLERANCE = 1e-9
# Shadow queries in flight per API worker; more are skipped (counted), so that comparing never
# takes more than this many connections from either system's pool or holds answers without bound.
MAX_SHADOWS = 2
# After the legacy store fails, requests go to Tally for this long before it is tried again.
BREAK_S = 30.0

_decode = msgspec.json.Decoder().decode
_pending: set[asyncio.Task] = set()


class Breaker:
    """Stops routing to the legacy store for BREAK_S after it failed, so that a legacy store that is
    down costs one request's wait, not every request's."""

    def __init__(self) -> None:
        self.until = 0.0

    def closed(self) -> bool:
        return time.monotonic() >= self.until

    def failed(self) -> None:
        self.until = time.monotonic() + BREAK_S


breaker = Breaker()


def legacy_can_answer(q: AggregateQuery) -> bool:
    return q.named is None and set(q.metrics) <= SUPPORTED_METRICS


def choose(settings: Settings, q: AggregateQuery, rng: Callable[[], float] = random.random) -> str:
    if settings.legacy_read_share and legacy_can_answer(q) and rng() < settings.legacy_read_share:
        if breaker.closed():
            return "legacy"
        FALLBACKS.inc()
    return "tally"


def shadow(
    tally: Callable[[], Awaitable[tuple[bytes, datetime | None]]],
    legacy: Callable[[], Awaitable[bytes]],
    step: timedelta,
    end: datetime,
    legacy_horizon: datetime,
) -> None:
    """Ask both systems (in the background, after the answer) and count whether they agree. `tally`
    gives Tally's series with count, sum and late_count, and its final horizon; `legacy` the legacy
    store's with count and sum."""
    if len(_pending) >= MAX_SHADOWS:
        SHADOW.labels("skipped").inc()
        return
    task = asyncio.get_running_loop().create_task(_compare(tally, legacy, step, end, legacy_horizon))
    _pending.add(task)  # the loop keeps only weak references to tasks
    task.add_done_callback(_pending.discard)


async def stop() -> None:
    """Cancel the comparisons in flight (the worker is stopping; their pools are closing)."""
    for task in list(_pending):
        task.cancel()
    await asyncio.gather(*_pending, return_exceptions=True)


async def _compare(tally, legacy, step: timedelta, end: datetime, legacy_horizon: datetime) -> None:
    try:
        (ours, tally_horizon), theirs = await asyncio.gather(tally(), legacy())
    except Exception as e:  # noqa: BLE001 - a shadow query failing must never reach the client
        SHADOW.labels("error").inc()
        log.info("shadow query failed: %s", e)
        return
    if tally_horizon is None:
        SHADOW.labels("skipped").inc()  # no bucket is final in Tally yet
        return
    horizon = min(tally_horizon, legacy_horizon)
    SHADOW.labels(compare_points(ours, theirs, lambda t: min(t + step, end) <= horizon)).inc()


def compare_points(tally: bytes, legacy: bytes, closed: Callable[[datetime], bool]) -> str:
    """match, differ or skipped (no point to compare): the two series answers (JSON), count exactly
    and sum to 1e-9 relative, over the buckets `closed` keeps (final in both systems) except those
    where Tally still has late events to fold (the legacy side counts them already)."""
    ours, theirs = _points(tally, closed), _points(legacy, closed)
    for key in [k for k, p in ours.items() if p[2]]:
        del ours[key]
        theirs.pop(key, None)
    if not ours and not theirs:
        return "skipped"
    if ours.keys() != theirs.keys():
        return "differ"
    for key, (ca, sa, _late) in ours.items():
        cb, sb, _ = theirs[key]
        if ca != cb or (sa is None) != (sb is None) or (sa is not None and relative(sa, sb) > SUM_TOLERANCE):
            return "differ"
    return "match"


def _points(series_json: bytes, closed: Callable[[datetime], bool]) -> dict[tuple, tuple]:
    out = {}
    for s in _decode(series_json):
        group = tuple(sorted(s["group"].items()))
        for p in s["points"]:
            t = datetime.fromisoformat(p["t"]).astimezone(UTC)
            if closed(t):
                out[(group, t)] = (p.get("count"), p.get("sum"), p.get("late_count"))
    return out
