"""Aggregate answers for whole final days, kept encoded in memory.

A bucket is final once every partition's watermark is past its end plus the allowed lateness:
from then on the stream never changes its rollup rows (later events go to the late ledger; only
the correction step folds them in, and it bumps the rollup revision). So the
answer of a query over a final day depends on nothing but the query, and a 30-day dashboard
re-reads only today from PostgreSQL; the final days come from here as JSON fragments, spliced
without being decoded or encoded again (the way Druid caches results per immutable segment).

The cache lives in each API worker, bounded by the number of points it holds (least recently
used days go first). A process restart, or a query shape not asked before, starts cold; a new
rollup revision (bumped by whatever rewrites final buckets) empties it.
"""

from __future__ import annotations

from collections import OrderedDict
from datetime import UTC, datetime, timedelta

from psycopg import AsyncConnection

from tally.storage import aggregates
from tally.storage.aggregates import AggregateQuery
from tally.storage.layouts import Fragment, Layout, Rows, encode_series

DAY = timedelta(days=1)
MAX_SPANS = 64  # merged ranges of whole days kept (see FinalDays._keep_span)
_ROWS = Rows()

# group key -> the series' points over one day, encoded in the answer's layout (tally.storage.layouts)
Fragments = dict[tuple, Fragment]


class FinalDays:
    def __init__(self, max_points: int = 2_000_000):
        self.max_points = max_points
        self.points = 0
        self.days: OrderedDict[tuple, tuple[Fragments, int]] = OrderedDict()
        # (first day's key, last day) -> the days between merged per group, and their points
        self.spans: OrderedDict[tuple, tuple[Fragments, int]] = OrderedDict()
        self.span_points = 0
        self.hits = self.misses = 0
        self.revision: int | None = None

    def check_revision(self, revision: int) -> None:
        """Final days were rewritten (late events folded in, a backfill): forget them all. Read
        the revision before the data, so an entry is never older than the revision it is kept
        under. Only a newer revision counts: a slow request that read an older one neither empties
        what newer ones filled nor (see _fill) stores what it read."""
        if self.revision is None or revision > self.revision:
            self.days.clear()
            self.spans.clear()
            self.points = self.span_points = 0
            self.revision = revision

    async def series_json(self, conn: AsyncConnection, q: AggregateQuery, *args, **kwargs) -> bytes:
        """The `series` array of the answer, joined (see series_parts)."""
        return b"".join(await self.series_parts(conn, q, *args, **kwargs))

    async def series_parts(
        self,
        conn: AsyncConnection,
        q: AggregateQuery,
        has_hll: bool,
        final_before: datetime | None,
        revision: int | None = None,
        max_points: int | None = None,
        how: Layout = _ROWS,
    ) -> list[bytes]:
        """The `series` array of the answer, encoded, in pieces for the caller's one join (each copy
        of a 30-day answer's megabytes costs about a millisecond here): final whole days from the
        cache (filled on a miss with one query), the rest of the range from PostgreSQL. `revision`: the rollup
        revision read with `final_before` (aggregates.stream_state); a new one empties the cache.
        Raises aggregates.TooManyPoints once the answer would pass `max_points`.

        Other requests run between this one's awaits and may evict days or empty the cache: the
        days this request uses are taken out of the cache before its first await, and it keeps
        them, so neither can take one from under it."""
        if revision is not None:
            self.check_revision(revision)
        if "late_count" in q.metrics:
            # Late events keep arriving for final days (that is what late means): never cached.
            return [encode_series(how, await aggregates.run(conn, q, has_hll, final_before, max_points))]
        first = _ceil_day(q.start)
        last = min(_floor_day(q.end), _floor_day(final_before) if final_before else first)
        if last <= first:
            return [encode_series(how, await aggregates.run(conn, q, has_hll, final_before, max_points))]
        days = [first + i * DAY for i in range((last - first) // DAY)]
        budget = _Budget(max_points)
        span_key = (self._key(q, first, how), last)
        span = self.spans.get(span_key)
        if span is not None:
            self.spans.move_to_end(span_key)
            self.hits += len(days)
            budget.spend(span[1])
        else:
            span = await self._span(conn, q, has_hll, final_before, days, revision, budget, how)
            if revision is None or revision == self.revision:
                self._keep_span(span_key, span)
        # Head (before the first whole day), the days, the tail: disjoint, in time order, and split
        # at day boundaries, which are bucket boundaries for every granularity.
        pieces: list[Fragments] = [await self._live(conn, q, has_hll, final_before, q.start, first, budget, how)]
        pieces.append(span[0])
        pieces.append(await self._live(conn, q, has_hll, final_before, last, q.end, budget, how))
        parts = [b"["]
        for i, group in enumerate(sorted({g for piece in pieces for g in piece})):
            if i:
                parts.append(b",")
            fragments = [piece[group] for piece in pieces if group in piece]
            parts += how.series(dict(zip(q.group_by, group, strict=True)), fragments)
        parts.append(b"]")
        return parts

    async def _span(
        self, conn: AsyncConnection, q: AggregateQuery, has_hll: bool, final_before, days, revision, budget, how
    ) -> tuple[Fragments, int]:
        """The whole days of a query merged into one fragment per group: from the cached days,
        those missing read and cached first."""
        held: dict[datetime, tuple[Fragments, int]] = {}
        for d in days:
            entry = self.days.get(self._key(q, d, how))
            if entry is not None:
                self.days.move_to_end(self._key(q, d, how))
                held[d] = entry
        missing = [d for d in days if d not in held]
        self.misses += len(missing)
        self.hits += len(days) - len(missing)
        budget.spend(sum(n for _f, n in held.values()))
        if missing:
            fetched = await self._fill(
                conn, q, has_hll, final_before, missing[0], missing[-1] + DAY, revision, budget, how
            )
            held.update((d, fetched[d]) for d in missing)
        groups = sorted({g for fragments, _n in held.values() for g in fragments})
        merged = {g: how.merge([held[d][0][g] for d in days if g in held[d][0]]) for g in groups}
        return merged, sum(n for _f, n in held.values())

    def _keep_span(self, key: tuple, span: tuple[Fragments, int]) -> None:
        """A dashboard asks the same whole days every few seconds: merged once, they are spliced
        as they are (on this machine the merging was most of a cached 30-day answer's work).
        Bounded by count and points, least recently used first out."""
        self.spans[key] = span
        self.span_points += span[1]
        while len(self.spans) > 1 and (len(self.spans) > MAX_SPANS or self.span_points > self.max_points):
            _key, (_f, n) = self.spans.popitem(last=False)
            self.span_points -= n

    @staticmethod
    async def _live(
        conn: AsyncConnection,
        q: AggregateQuery,
        has_hll: bool,
        final_before,
        start,
        end,
        budget: _Budget,
        how: Layout,
    ) -> Fragments:
        if start >= end:
            return {}
        series = await aggregates.run(conn, _within(q, start, end), has_hll, final_before, budget.left)
        budget.spend(sum(len(s["points"]) for s in series))
        return {_group_key(q, s): how.fragment(s["points"]) for s in series}

    async def _fill(
        self,
        conn: AsyncConnection,
        q: AggregateQuery,
        has_hll: bool,
        final_before,
        start,
        end,
        revision,
        budget,
        how: Layout,
    ) -> dict[datetime, tuple[Fragments, int]]:
        """Query [start, end) once, split it into days, cache them; return them too."""
        by_day: dict[datetime, dict[tuple, list[dict]]] = {start + i * DAY: {} for i in range((end - start) // DAY)}
        for s in await aggregates.run(conn, _within(q, start, end), has_hll, final_before, budget.left):
            group = _group_key(q, s)
            for p in s["points"]:
                by_day[_floor_day(p["t"])].setdefault(group, []).append(p)
        out = {}
        for day, groups in by_day.items():
            n = sum(len(points) for points in groups.values())
            out[day] = entry = ({group: how.fragment(points) for group, points in groups.items()}, n)
            key = self._key(q, day, how)
            # Only under the revision the data was read after: a newer one may have rewritten it.
            if key not in self.days and (revision is None or revision == self.revision):
                self.days[key] = entry
                self.points += n
        budget.spend(sum(n for _f, n in out.values()))
        while self.points > self.max_points and len(self.days) > 1:
            _key, (_f, n) = self.days.popitem(last=False)
            self.points -= n
        return out

    @staticmethod
    def _key(q: AggregateQuery, day: datetime, how: Layout) -> tuple:
        return (
            day,
            how.name,
            q.granularity,
            tuple(q.metrics),
            tuple(q.group_by),
            tuple(sorted(set(q.event_types))),
            tuple(sorted(set(q.sources))),
            # Named metrics' definitions can change while the API runs: an answer is theirs alone.
            q.named.key if q.named is not None else None,
        )


class _Budget:
    """Points an answer may still take; None: no limit."""

    def __init__(self, limit: int | None):
        self.limit = limit
        self.used = 0

    @property
    def left(self) -> int | None:
        return None if self.limit is None else self.limit - self.used

    def spend(self, n: int) -> None:
        self.used += n
        if self.limit is not None and self.used > self.limit:
            raise aggregates.TooManyPoints(self.limit)


def _within(q: AggregateQuery, start: datetime, end: datetime) -> AggregateQuery:
    return AggregateQuery(start, end, q.granularity, q.metrics, q.group_by, q.event_types, q.sources, q.named)


def _group_key(q: AggregateQuery, series: dict) -> tuple:
    return tuple(series["group"][g] for g in q.group_by)


def _floor_day(t: datetime) -> datetime:
    """The UTC day: buckets are aligned to the epoch in UTC, whatever offset the query used."""
    return t.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)


def _ceil_day(t: datetime) -> datetime:
    d = _floor_day(t)
    return d if d == t else d + DAY
