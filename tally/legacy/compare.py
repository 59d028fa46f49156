"""Legacy vs Tally: the same question asked of both systems, per (hour, event_type).

Counts and sums of each side, and how long each side's query took. Tally's side counts what the
rollups hold plus late events still waiting for the correction step (the legacy side has those
too); a difference is relative to the larger side, and a row differs when its count or its sum
differs by more than the tolerance (TALLY_LEGACY_TOLERANCE). Results are kept per hour in
PostgreSQL's legacy_comparison table, which the quality report reads.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from datetime import datetime

from tally.legacy.store import HourlyTotals, LegacyStore, PostgresLegacyStore
from tally.settings import Settings
from tally.storage import rollup_store

_TALLY_HOURLY = """
with counted as (
    select date_bin('1 hour', bucket, timestamptz '1970-01-01Z') as hour, event_type,
           sum(event_count) as n, sum(value_sum) as total
    from rollup_1m where bucket >= %(s)s and bucket < %(e)s group by 1, 2
), pending as (
    select date_bin('1 hour', bucket, timestamptz '1970-01-01Z') as hour, event_type,
           count(*) as n, coalesce(sum((event->>'value')::float8), 0) as total
    from late_events where folded_at is null and bucket >= %(s)s and bucket < %(e)s group by 1, 2
)
select hour, event_type, sum(n)::bigint, sum(total)
from (select * from counted union all select * from pending) both_parts group by 1, 2
"""


def relative(a: float, b: float) -> float:
    return abs(a - b) / max(abs(a), abs(b), 1.0)


@dataclass(frozen=True)
class Row:
    hour: datetime
    event_type: str
    legacy_count: int
    tally_count: int
    legacy_sum: float
    tally_sum: float

    @property
    def difference(self) -> float:
        """The larger of the count's and the sum's relative difference."""
        return max(relative(self.legacy_count, self.tally_count), relative(self.legacy_sum, self.tally_sum))


@dataclass
class Comparison:
    start: datetime
    end: datetime
    tolerance: float
    legacy_s: float
    tally_s: float
    rows: list[Row] = field(default_factory=list)

    @property
    def differing(self) -> list[Row]:
        return sorted((r for r in self.rows if r.difference > self.tolerance), key=lambda r: -r.difference)

    def totals(self) -> dict[str, float]:
        return {
            "legacy_count": sum(r.legacy_count for r in self.rows),
            "tally_count": sum(r.tally_count for r in self.rows),
            "legacy_sum": sum(r.legacy_sum for r in self.rows),
            "tally_sum": sum(r.tally_sum for r in self.rows),
        }


def tally_hourly(settings: Settings, start: datetime, end: datetime) -> HourlyTotals:
    with rollup_store.connect(settings, connect_timeout=5) as conn:
        rows = conn.execute(_TALLY_HOURLY, {"s": start, "e": end}).fetchall()
    return {(hour, event_type): (count, total) for hour, event_type, count, total in rows}


def legacy_store(settings: Settings) -> LegacyStore:
    if not settings.legacy_dsn:
        raise ValueError("TALLY_LEGACY_DSN is not set: there is no legacy system to compare with")
    return PostgresLegacyStore(settings.legacy_dsn, settings.legacy_table, max(settings.query_timeout_s, 30.0))


def compare(settings: Settings, start: datetime, end: datetime, store: LegacyStore | None = None) -> Comparison:
    """Both sides' totals of [start, end) per (hour, event_type); a key only one side has is a row
    with zeros on the other."""
    t0 = time.perf_counter()
    tally = tally_hourly(settings, start, end)
    tally_s = time.perf_counter() - t0
    legacy, legacy_s = asyncio.run(_legacy_hourly(store or legacy_store(settings), start, end))
    rows = []
    for key in sorted(tally.keys() | legacy.keys()):
        lc, ls = legacy.get(key, (0, 0.0))
        tc, ts = tally.get(key, (0, 0.0))
        rows.append(Row(key[0], key[1], lc, tc, ls, ts))
    return Comparison(start, end, settings.legacy_tolerance, legacy_s, tally_s, rows)


async def _legacy_hourly(store: LegacyStore, start: datetime, end: datetime) -> tuple[HourlyTotals, float]:
    await store.open()
    try:
        t0 = time.perf_counter()
        totals = await store.hourly(start, end)
        return totals, time.perf_counter() - t0
    finally:
        await store.close()


def save(settings: Settings, c: Comparison) -> None:
    """Replaces what was recorded for [start, end): a rerun of an hour leaves only its latest result."""
    with rollup_store.connect(settings, connect_timeout=5) as conn, conn.transaction():
        conn.execute("delete from legacy_comparison where hour >= %s and hour < %s", (c.start, c.end))
        with conn.cursor().copy(
            "copy legacy_comparison (hour, event_type, legacy_count, tally_count, legacy_sum, tally_sum,"
            " legacy_query_s, tally_query_s, tolerance) from stdin"
        ) as copy:
            for r in c.rows:
                copy.write_row(
                    (r.hour, r.event_type, r.legacy_count, r.tally_count, r.legacy_sum, r.tally_sum)
                    + (c.legacy_s, c.tally_s, c.tolerance)
                )


def recorded(settings: Settings, start: datetime, end: datetime, shown: int = 100) -> dict:
    """What the quality report says about [start, end): hours compared, rows, the rows beyond their
    tolerance (largest first, at most `shown`), both sides' totals and query times."""
    with rollup_store.connect(settings, connect_timeout=5) as conn:
        rows = conn.execute(
            "select hour, event_type, legacy_count, tally_count, legacy_sum, tally_sum, legacy_query_s,"
            " tally_query_s, tolerance from legacy_comparison where hour >= %s and hour < %s order by hour, event_type",
            (start, end),
        ).fetchall()
    compared = [Row(*r[:6]) for r in rows]
    differing = sorted(
        (row for row, r in zip(compared, rows, strict=True) if row.difference > r[8]), key=lambda r: -r.difference
    )
    by_hour = {r[0]: (r[6], r[7]) for r in rows}
    return {
        "hours_compared": len(by_hour),
        "rows": len(compared),
        "tolerance": rows[0][8] if rows else settings.legacy_tolerance,
        "differing_rows": len(differing),
        "differing": [_public(r) for r in differing[:shown]],
        "legacy_count": sum(r.legacy_count for r in compared),
        "tally_count": sum(r.tally_count for r in compared),
        "legacy_query_s_max": max((s[0] for s in by_hour.values()), default=None),
        "tally_query_s_max": max((s[1] for s in by_hour.values()), default=None),
    }


def _public(r: Row) -> dict:
    return {
        "hour": r.hour.isoformat(),
        "event_type": r.event_type,
        "legacy_count": r.legacy_count,
        "tally_count": r.tally_count,
        "legacy_sum": r.legacy_sum,
        "tally_sum": r.tally_sum,
        "difference": round(r.difference, 6),
    }
