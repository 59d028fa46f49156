"""Answering aggregate queries from the minute rollups (never from raw events).

Partitions' rows are combined here: counts and sums add, min/max combine, and unique-user
sketches merge (hll_union_agg in SQL where the extension is installed, else in Python).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from psycopg import AsyncConnection, sql

from tally.sketch import Hll

GRANULARITIES: dict[str, timedelta] = {
    "1m": timedelta(minutes=1),
    "5m": timedelta(minutes=5),
    "15m": timedelta(minutes=15),
    "1h": timedelta(hours=1),
    "1d": timedelta(days=1),
}
METRICS = ("count", "sum", "min", "max", "avg", "unique_users")
GROUPS = ("event_type", "source")
MAX_BUCKETS = 1500


def default_granularity(start: datetime, end: datetime) -> str:
    """The finest granularity that returns at most about MAX_BUCKETS buckets."""
    span = end - start
    for name, step in GRANULARITIES.items():
        if span / step <= MAX_BUCKETS:
            return name
    return "1d"


@dataclass
class AggregateQuery:
    start: datetime
    end: datetime
    granularity: str
    metrics: list[str]
    group_by: list[str]
    event_types: list[str]
    sources: list[str]


async def run(conn: AsyncConnection, q: AggregateQuery, has_hll: bool) -> list[dict]:
    """Series sorted by group, points sorted by time; empty buckets omitted."""
    groups = [sql.Identifier(g) for g in q.group_by]
    want_users = "unique_users" in q.metrics
    if want_users:
        users = sql.SQL("hll_cardinality(hll_union_agg(users::hll))" if has_hll else "array_agg(users)")
    else:
        users = sql.SQL("null")
    where = [sql.SQL("bucket >= %(start)s"), sql.SQL("bucket < %(end)s")]
    if q.event_types:
        where.append(sql.SQL("event_type = any(%(event_types)s)"))
    if q.sources:
        where.append(sql.SQL("source = any(%(sources)s)"))
    query = sql.SQL(
        "select date_bin(%(step)s, bucket, timestamptz '1970-01-01 00:00:00+00') as t{groups},"
        " sum(event_count)::bigint, sum(value_sum), min(value_min), max(value_max), sum(value_count)::bigint, {users}"
        " from rollup_1m where {where} group by t{groups} order by {order}t"
    ).format(
        groups=sql.SQL("").join(sql.SQL(", ") + g for g in groups),
        users=users,
        where=sql.SQL(" and ").join(where),
        order=sql.SQL("").join(g + sql.SQL(", ") for g in groups),
    )
    params = {
        "step": GRANULARITIES[q.granularity],
        "start": q.start,
        "end": q.end,
        "event_types": q.event_types,
        "sources": q.sources,
    }
    series: dict[tuple, list[dict]] = {}
    n = len(groups)
    async with conn.cursor() as cur:
        await cur.execute(query, params)
        async for row in cur:
            t, key = row[0], tuple(row[1 : 1 + n])
            count, vsum, vmin, vmax, vcount, uniq = row[1 + n :]
            point: dict = {"t": t}
            for m in q.metrics:
                if m == "count":
                    point["count"] = count
                elif m == "sum":
                    point["sum"] = vsum if vcount else None
                elif m == "min":
                    point["min"] = vmin
                elif m == "max":
                    point["max"] = vmax
                elif m == "avg":
                    point["avg"] = vsum / vcount if vcount else None
                elif m == "unique_users":
                    point["unique_users"] = round(uniq if has_hll else _merge_card(uniq))
            series.setdefault(key, []).append(point)
    return [{"group": dict(zip(q.group_by, key, strict=True)), "points": pts} for key, pts in series.items()]


def _merge_card(sketches: list[bytes]) -> float:
    h = Hll()
    for b in sketches:
        h.merge(Hll.from_bytes(bytes(b)))
    return h.cardinality()


async def as_of(conn: AsyncConnection) -> datetime | None:
    """When the dataflow last committed rollups."""
    row = await (await conn.execute("select max(updated_at) from stream_offsets")).fetchone()
    return row[0] if row else None
