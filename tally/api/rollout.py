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
    "tally_rollout_shadow_total", "Answers compared with the other system's: match, differ or error", ["result"]
)
SUM_TOLERANCE = 1e-9

_decode = msgspec.json.Decoder().decode
_pending: set[asyncio.Task] = set()


def legacy_can_answer(q: AggregateQuery) -> bool:
    return q.named is None and set(q.metrics) <= SUPPORTED_METRICS


def choose(settings: Settings, q: AggregateQuery, rng: Callable[[], float] = random.random) -> str:
    if settings.legacy_read_share and legacy_can_answer(q) and rng() < settings.legacy_read_share:
        return "legacy"
    return "tally"


def shadow(
    answered: bytes,
    other: Callable[[], Awaitable[tuple[bytes, datetime | None]]],
    step: timedelta,
    end: datetime,
    legacy_horizon: datetime,
) -> None:
    """Compare an answer's series (JSON) with the other system's, in the background. `other` gives
    the other answer and Tally's final horizon; compared are the buckets final in both systems."""
    task = asyncio.get_running_loop().create_task(_compare(answered, other, step, end, legacy_horizon))
    _pending.add(task)  # the loop keeps only weak references to tasks
    task.add_done_callback(_pending.discard)


async def _compare(answered, other, step: timedelta, end: datetime, legacy_horizon: datetime) -> None:
    try:
        theirs, tally_horizon = await other()
    except Exception as e:  # noqa: BLE001 - a shadow query failing must never reach the client
        SHADOW.labels("error").inc()
        log.info("shadow query failed: %s", e)
        return
    if tally_horizon is None:
        return  # no bucket is final in Tally yet: nothing to compare
    horizon = min(tally_horizon, legacy_horizon)
    result = "match" if same_points(answered, theirs, lambda t: min(t + step, end) <= horizon) else "differ"
    SHADOW.labels(result).inc()


def same_points(a: bytes, b: bytes, closed: Callable[[datetime], bool]) -> bool:
    """Whether two series answers (JSON) have the same points, count exactly and sum to 1e-9
    relative, among the buckets `closed` keeps (those both systems hold as final)."""
    pa, pb = _points(a, closed), _points(b, closed)
    if pa.keys() != pb.keys():
        return False
    for key, (ca, sa) in pa.items():
        cb, sb = pb[key]
        if ca != cb or (sa is None) != (sb is None) or (sa is not None and relative(sa, sb) > SUM_TOLERANCE):
            return False
    return True


def _points(series_json: bytes, closed: Callable[[datetime], bool]) -> dict[tuple, tuple]:
    out = {}
    for s in _decode(series_json):
        group = tuple(sorted(s["group"].items()))
        for p in s["points"]:
            t = datetime.fromisoformat(p["t"]).astimezone(UTC)
            if closed(t):
                out[(group, t)] = (p.get("count"), p.get("sum"))
    return out
