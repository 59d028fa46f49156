"""The legacy system as a store Tally can ask: the same aggregate questions, answered from its events.

`PostgresLegacyStore` reads a PostgreSQL events table of the shape tally.legacy.table describes
(what the PostgreSQL sink writes); a legacy system of another kind plugs in by implementing
`LegacyStore`. It answers the comparison's per-(hour, event_type) counts and sums, and, for the
staged rollout, /api/aggregate's built-in metrics in /api/aggregate's own shape.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Protocol

from psycopg import AsyncConnection, sql
from psycopg_pool import AsyncConnectionPool

from tally.storage.aggregates import GRANULARITIES, AggregateQuery, collect

# What a legacy events table can answer exactly; unique users, late counts and the named metrics
# are Tally's alone, and a request for them is answered by Tally whatever the rollout share.
SUPPORTED_METRICS = frozenset({"count", "sum", "min", "max", "avg"})
ORIGIN = "timestamptz '1970-01-01 00:00:00+00'"

HourlyTotals = dict[tuple[datetime, str], tuple[int, float]]


class LegacyStore(Protocol):
    name: str

    async def open(self) -> None: ...

    async def hourly(self, start: datetime, end: datetime) -> HourlyTotals: ...

    async def aggregate(self, q: AggregateQuery, final_before: datetime, max_points: int) -> list[dict]: ...

    async def close(self) -> None: ...


class PostgresLegacyStore:
    name = "postgres"

    def __init__(self, dsn: str, table: str, timeout_s: float, max_size: int = 4):
        self.table = sql.Identifier(table)
        self.pool = AsyncConnectionPool(
            dsn,
            min_size=1,
            max_size=max_size,
            open=False,
            timeout=timeout_s,
            check=AsyncConnectionPool.check_connection,
            kwargs={"options": f"-c statement_timeout={int(timeout_s * 1000)}", "autocommit": True},
        )

    async def open(self) -> None:
        await self.pool.open(wait=False)

    async def close(self) -> None:
        await self.pool.close()

    async def hourly(self, start: datetime, end: datetime) -> HourlyTotals:
        query = sql.SQL(
            "select date_bin('1 hour', ts, {origin}), event_type, count(*), coalesce(sum(value), 0)"
            " from {t} where ts >= %(s)s and ts < %(e)s group by 1, 2"
        ).format(origin=sql.SQL(ORIGIN), t=self.table)
        async with self.pool.connection() as conn:
            rows = await (await conn.execute(query, {"s": start, "e": end})).fetchall()
        return {(hour, event_type): (count, total) for hour, event_type, count, total in rows}

    async def aggregate(self, q: AggregateQuery, final_before: datetime, max_points: int) -> list[dict]:
        """Series sorted by group, points by time, empty buckets omitted, as tally.storage.aggregates.run
        answers; a point is final once its bucket ended before `final_before`."""
        async with self.pool.connection() as conn:
            return await _aggregate(conn, self.table, q, final_before, max_points)


async def _aggregate(
    conn: AsyncConnection, table: sql.Identifier, q: AggregateQuery, final_before: datetime, max_points: int
) -> list[dict]:
    groups = [sql.Identifier(g) for g in q.group_by]
    filters = []
    if q.event_types:
        filters.append(sql.SQL(" and event_type = any(%(event_types)s)"))
    if q.sources:
        filters.append(sql.SQL(" and source = any(%(sources)s)"))
    # The columns Tally's rollup query gives, so Tally's own code makes the points (no users, no late).
    query = sql.SQL(
        "select date_bin(%(step)s, ts, {origin}) as t{groups}, count(*), sum(value), min(value), max(value),"
        " count(value), null::bytea, 0::bigint from {t} where ts >= %(start)s and ts < %(end)s{filters}"
        " group by t{groups} order by {order}t"
    ).format(
        origin=sql.SQL(ORIGIN),
        groups=sql.SQL("").join(sql.SQL(", ") + g for g in groups),
        t=table,
        filters=sql.SQL("").join(filters),
        order=sql.SQL("").join(g + sql.SQL(", ") for g in groups),
    )
    params = {
        "step": GRANULARITIES[q.granularity],
        "start": q.start,
        "end": q.end,
        "event_types": q.event_types,
        "sources": q.sources,
    }
    async with conn.cursor() as cur:
        await cur.execute(query, params)
        return await collect(cur, q, False, final_before, max_points)


def final_before(now: datetime, lateness: timedelta) -> datetime:
    """A legacy table has no watermark: its buckets are taken as final once the allowed lateness has
    passed since they ended, the promise Tally's own final points make."""
    return now - lateness
