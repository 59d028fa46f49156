"""Reconciliation: do the rollups (plus the late ledger) account for every raw event, exactly?

For each hour of a closed range and each (event_type, source), the distinct events stored in
Cassandra must equal the events counted in the minute rollups plus those in the late ledger not
yet folded into them (tally.storage.corrections).
Any difference is a mismatch: an event counted twice (a duplicate the dataflow did not catch), an
event lost between raw storage and the rollups, or a correction not yet applied. The orchestration
layer runs this as an asset check; it can be run by hand too (`reconcile(settings, start, end)`).

Event types are those that have rollup rows or late events in the range, plus any passed in:
Cassandra cannot list the event types it holds without a full scan.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from tally.settings import Settings
from tally.storage import raw_events, raw_reader, rollup_store

HOUR = timedelta(hours=1)

Cell = tuple[datetime, str, str]  # (hour, event_type, source)


@dataclass(frozen=True)
class Mismatch:
    hour: datetime
    event_type: str
    source: str
    raw_distinct: int
    rollup_count: int
    late_count: int

    @property
    def difference(self) -> int:
        """Positive: raw events not counted; negative: counted more often than stored."""
        return self.raw_distinct - self.rollup_count - self.late_count


def reconcile(
    settings: Settings, start: datetime, end: datetime, event_types: list[str] | None = None
) -> list[Mismatch]:
    """Every (hour, event_type, source) in [start, end) whose counts disagree; [] if all agree.
    `start` and `end` are rounded out to whole hours."""
    start = start.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    end = end.astimezone(UTC)
    if end.replace(minute=0, second=0, microsecond=0) < end:
        end = end.replace(minute=0, second=0, microsecond=0) + HOUR
    counted, late = _counted(settings, start, end)
    types = sorted({t for _h, t, _s in counted} | {t for _h, t, _s in late} | set(event_types or ()))
    stored = _raw_distinct(settings, types, start, end, settings.kafka_partitions)
    out = []
    for cell in sorted(counted.keys() | late.keys() | stored.keys()):
        raw, rolled, lat = stored.get(cell, 0), counted.get(cell, 0), late.get(cell, 0)
        if raw != rolled + lat:
            out.append(Mismatch(cell[0], cell[1], cell[2], raw, rolled, lat))
    return out


def closed_until(settings: Settings, topic: str | None = None) -> datetime | None:
    """Event time before which every minute is closed in every partition (so reconciling it is
    meaningful): the slowest partition's watermark less the allowed lateness. None before the
    dataflow has committed anything."""
    with rollup_store.connect(settings, connect_timeout=5) as conn:
        (mark,) = conn.execute(
            "select min(watermark) from stream_offsets where topic = %s", (topic or settings.events_topic,)
        ).fetchone()
    return None if mark is None else mark - timedelta(seconds=settings.allowed_lateness_s)


def _counted(settings: Settings, start: datetime, end: datetime) -> tuple[Counter, Counter]:
    with rollup_store.connect(settings) as conn:
        return _per_hour(conn, "sum(event_count)::bigint", "rollup_1m", start, end), _per_hour(
            conn, "count(*)", "late_events", start, end, " and folded_at is null"
        )


def _per_hour(conn, total: str, table: str, start: datetime, end: datetime, where: str = "") -> Counter:
    rows = conn.execute(
        f"select date_bin('1 hour', bucket, timestamptz '1970-01-01Z'), event_type, source, {total}"
        f" from {table} where bucket >= %s and bucket < %s{where} group by 1, 2, 3",
        (start, end),
    )
    return Counter({(hour, et, src): n for hour, et, src, n in rows})


def _raw_distinct(settings: Settings, types: list[str], start: datetime, end: datetime, shards: int) -> Counter:
    cluster = raw_events.cluster(settings)
    try:
        reader = raw_reader.RawEventReader(cluster.connect(settings.cassandra_keyspace), shards)
        out: Counter = Counter()
        hour = start
        while hour < end:
            for et in types:
                # The same event_id stored twice (a replay, a client retry) is one event.
                sources = {e.event_id: e.source for e in reader.hour_ids(et, raw_events.us(hour))}
                for source, n in Counter(sources.values()).items():
                    out[(hour, et, source)] += n
            hour += HOUR
        return out
    finally:
        cluster.shutdown()
