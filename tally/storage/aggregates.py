"""Answering aggregate queries from the minute rollups (never from raw events).

Partitions' rows are combined here: counts and sums add, min/max combine, and unique-user
sketches merge (hll_union_agg in SQL where the extension is installed, else in Python).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from psycopg import AsyncConnection, AsyncCursor, sql

from tally.sketch import Hll

GRANULARITIES: dict[str, timedelta] = {
    "1m": timedelta(minutes=1),
    "5m": timedelta(minutes=5),
    "15m": timedelta(minutes=15),
    "1h": timedelta(hours=1),
    "1d": timedelta(days=1),
}
# late_count: events that arrived after their bucket closed (the late ledger) and are not in
# `count` yet; the correction step moves them into `count`. count + late_count is every event.
METRICS = ("count", "sum", "min", "max", "avg", "unique_users", "late_count")
GROUPS = ("event_type", "source")
# The rollup columns a named metric's measure can be, each with the one aggregation that combines
# partitions' and minutes' rows exactly (tally.semantic refuses every other).
MEASURES = {"event_count": "sum", "value_count": "sum", "value_sum": "sum", "value_min": "min", "value_max": "max"}
_INTEGER_MEASURES = ("event_count", "value_count")
MAX_BUCKETS = 1500


def default_granularity(start: datetime, end: datetime) -> str:
    """The finest granularity that returns at most about MAX_BUCKETS buckets."""
    span = end - start
    for name, step in GRANULARITIES.items():
        if span / step <= MAX_BUCKETS:
            return name
    return "1d"


class TooManyPoints(Exception):
    """The answer would hold more points (buckets x groups) than allowed."""

    def __init__(self, limit: int):
        self.message = f"the answer would hold more than {limit:,} points (buckets x groups)"
        super().__init__(self.message)


class NamedMetrics(Protocol):
    """The named metrics of a query (tally.semantic.plan.Plan): filtered aggregates over the rollup
    rows, and the function that turns a bucket's aggregates into the metrics' values."""

    key: str
    names: list[str]
    aggregates: list[tuple[str, str, sql.Composable | None]]  # (column, aggregation, filter)
    params: dict[str, Any]  # the filters' parameters, named apart from run()'s own

    def values(self, row: Sequence) -> dict[str, Any]: ...


@dataclass
class AggregateQuery:
    start: datetime
    end: datetime
    granularity: str
    metrics: list[str]  # built-in (METRICS) and named ones, in the order asked
    group_by: list[str]
    event_types: list[str]
    sources: list[str]
    named: NamedMetrics | None = None  # what the named ones among `metrics` are computed from


def sources(q: AggregateQuery, final_before: datetime | None) -> list[tuple[str, datetime, datetime]]:
    """Which table answers which part of the range. Whole hours that are final (hour rows are
    written when an hour closes) come from hour rows when the granularity is an hour or more; the
    rest comes from minute rows, so the answer is the same as from minutes alone."""
    if GRANULARITIES[q.granularity] < timedelta(hours=1) or final_before is None:
        return [("rollup_1m", q.start, q.end)]
    # Hours in UTC: an offset like +05:30 would otherwise put "whole hours" at half past.
    first = q.start.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    if first < q.start:
        first += timedelta(hours=1)
    last = min(q.end, final_before).astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    if first >= last:
        return [("rollup_1m", q.start, q.end)]
    parts = [("rollup_1h", first, last)]
    if q.start < first:
        parts.append(("rollup_1m", q.start, first))
    if last < q.end:
        parts.append(("rollup_1m", last, q.end))
    return parts


async def run(
    conn: AsyncConnection,
    q: AggregateQuery,
    has_hll: bool,
    final_before: datetime | None = None,
    max_points: int | None = None,
) -> list[dict]:
    """Series sorted by group, points sorted by time; empty buckets omitted. `final_before`
    (see `stream_state`) says up to where hour rows exist; without it minutes answer. Raises
    TooManyPoints as soon as the answer passes `max_points`."""
    groups = [sql.Identifier(g) for g in q.group_by]
    if "unique_users" in q.metrics:
        users = sql.SQL("hll_cardinality(hll_union_agg(users::hll))" if has_hll else "array_agg(users)")
    else:
        users = sql.SQL("null")
    filters = []
    if q.event_types:
        filters.append(sql.SQL(" and event_type = any(%(event_types)s)"))
    if q.sources:
        filters.append(sql.SQL(" and source = any(%(sources)s)"))
    params: dict = {"step": GRANULARITIES[q.granularity], "event_types": q.event_types, "sources": q.sources}
    if q.named is not None:
        params.update(q.named.params)
    selects = []
    for i, (table, start, end) in enumerate(sources(q, final_before)):
        params[f"s{i}"], params[f"e{i}"] = start, end
        selects.append(
            sql.SQL(
                "select bucket, event_type, source, event_count, value_sum, value_min, value_max, value_count, users,"
                " 0 as late from {table} where bucket >= {s} and bucket < {e}{filters}"
            ).format(
                table=sql.Identifier(table),
                s=sql.Placeholder(f"s{i}"),
                e=sql.Placeholder(f"e{i}"),
                filters=sql.SQL("").join(filters),
            )
        )
    if "late_count" in q.metrics:
        # A bucket that only has late events still gets a point: count 0, late_count n.
        params["ls"], params["le"] = q.start, q.end
        selects.append(
            sql.SQL(
                "select bucket, event_type, source, 0, 0.0, null::float8, null::float8, 0, null::bytea, 1"
                " from late_events where bucket >= %(ls)s and bucket < %(le)s and folded_at is null{filters}"
            ).format(filters=sql.SQL("").join(filters))
        )
    query = sql.SQL(
        "select date_bin(%(step)s, bucket, timestamptz '1970-01-01 00:00:00+00') as t{groups},"
        " sum(event_count)::bigint, sum(value_sum), min(value_min), max(value_max), sum(value_count)::bigint,"
        " {users}, sum(late)::bigint{named}"
        " from ({rows}) r group by t{groups} order by {order}t"
    ).format(
        groups=sql.SQL("").join(sql.SQL(", ") + g for g in groups),
        users=users,
        named=sql.SQL("").join(sql.SQL(", ") + c for c in _named_columns(q.named, "late_count" in q.metrics)),
        rows=sql.SQL(" union all ").join(selects),
        order=sql.SQL("").join(g + sql.SQL(", ") for g in groups),
    )
    async with conn.cursor() as cur:
        await cur.execute(query, params)
        return await collect(cur, q, has_hll, final_before, max_points)


async def collect(
    cur: AsyncCursor, q: AggregateQuery, has_hll: bool, final_before: datetime | None, max_points: int | None
) -> list[dict]:
    """The answer's series from rows of (t, *groups, count, sum, min, max, value count, users, late,
    *named): sorted by group, points sorted by time; TooManyPoints past `max_points`. Shared with the
    legacy store (tally.legacy.store), whose rows have this shape too."""
    series: dict[tuple, list[dict]] = {}
    n = len(q.group_by)
    step = GRANULARITIES[q.granularity]
    points = 0
    async for row in cur:
        points += 1
        if max_points is not None and points > max_points:
            raise TooManyPoints(max_points)
        t, key = row[0], tuple(row[1 : 1 + n])
        count, vsum, vmin, vmax, vcount, uniq, late = row[1 + n : 8 + n]
        named = q.named.values(row[8 + n :]) if q.named is not None else {}
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
                point["unique_users"] = round(uniq if has_hll else _merge_card(uniq)) if uniq is not None else 0
            elif m == "late_count":
                point["late_count"] = late
            else:
                point[m] = named[m]
        # Final: no event can change this point any more (its part of the range is closed).
        point["final"] = final_before is not None and min(t + step, q.end) <= final_before
        series.setdefault(key, []).append(point)
    # Sorted here, not by the database's collation, so cached and uncached answers agree.
    return [{"group": dict(zip(q.group_by, key, strict=True)), "points": pts} for key, pts in sorted(series.items())]


def _named_columns(named: NamedMetrics | None, with_late: bool) -> list[sql.Composable]:
    """One aggregate per filtered measure, over the rows the filter keeps. Late-ledger rows (only
    there for late_count) are never part of a named metric: the rollups, like the dbt view
    MetricFlow reads, hold the events counted so far."""
    out = []
    for column, _agg, where in named.aggregates if named is not None else ():
        conditions = [sql.SQL("late = 0")] if with_late else []
        if where is not None:
            conditions.append(sql.SQL("({})").format(where))
        expr = sql.SQL("{}({})").format(sql.SQL(MEASURES[column]), sql.Identifier(column))
        if conditions:
            expr = sql.SQL("{} filter (where {})").format(expr, sql.SQL(" and ").join(conditions))
        # sum of bigint is numeric in PostgreSQL: counts come back as integers, as `count` does.
        out.append(sql.SQL("({})::bigint").format(expr) if column in _INTEGER_MEASURES else expr)
    return out


def _merge_card(sketches: list[bytes]) -> float:
    h = Hll()
    for b in sketches:
        if b is not None:
            h.merge(Hll.from_bytes(bytes(b)))
    return h.cardinality()


@dataclass
class StreamState:
    """How far the dataflow has got, read with every answer."""

    as_of: datetime | None  # when rollups were last committed
    watermark: datetime | None  # event time every partition has reached (None until each has one)
    final_before: datetime | None  # the stream no longer changes buckets ending at or before this
    revision: int = 0  # moves when final buckets were rewritten (see rollup_revision)


async def stream_state(conn: AsyncConnection, topic: str, partitions: int, lateness: timedelta) -> StreamState:
    """Buckets are final once every partition's watermark is past them by the allowed lateness;
    none are while some partition has no watermark yet."""
    cur = await conn.execute(
        "select min(watermark), count(watermark), max(updated_at), (select revision from rollup_revision)"
        " from stream_offsets where topic = %s",
        (topic,),
    )
    low, with_watermark, as_of, revision = await cur.fetchone()
    if with_watermark < partitions:
        return StreamState(as_of, None, None, revision or 0)
    return StreamState(as_of, low, low - lateness, revision or 0)
