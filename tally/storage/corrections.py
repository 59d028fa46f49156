"""The correction step: fold late-ledger events into the rollups they missed.

An event later than the allowed lateness is never dropped: the dataflow writes it to the late
ledger (`late_events`, and the `events.late` topic) and it shows as `late_count`. This step adds
such events to their minute and hour rows, marks them folded and bumps the rollup revision (so
API workers drop cached final days), all in one transaction: run twice, or killed half way, it
adds each event once. The orchestration layer schedules it; `tally correct` runs it by hand.

Only events whose whole hour is closed in their partition are folded: the dataflow still holds
open hours in memory and writes each hour row once, from its own minutes, when the hour closes;
a minute changed under it would make that hour row disagree with its minutes.

A late event may be a copy of one stored and counted earlier, beyond the dedup horizon: those are
found in raw storage first (tally.storage.late_copies), marked `duplicate` and folded without
being added, and raw storage is left with one copy. Until this step runs, the reconciliation
reports such an hour (raw storage holds the id once per distinct event, the ledger one too many).

Raw storage is the evidence of a duplicate, so it changes only after the decision is committed:
1. one transaction decides from raw storage (read only), adds the events that are not duplicates,
   marks the rows folded and records in each which raw pieces must lose its id;
2. then those ids are taken out of exactly those pieces, and the rows are marked fixed.
A failed or killed first stage leaves nothing changed; a rerun finishes any row the second stage
did not (taking out an id already gone changes nothing). Settled rows are never decided again.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime

import psycopg

from tally.cells import HOUR_S, Acc, RollupRow, hour_of
from tally.settings import Settings
from tally.storage import late_copies, rollup_store

_PENDING = """
select l.event_id, l.bucket, l.event_type, l.source, l.kafka_partition, l.event, l.position,
       extract(epoch from l.watermark)::bigint
from late_events l
join stream_offsets o on o.topic = %(topic)s and o.kafka_partition = l.kafka_partition
where l.folded_at is null
  and date_bin('1 hour', l.bucket, timestamptz '1970-01-01Z') + interval '1 hour' + %(lateness)s <= o.watermark
  and (%(until)s::timestamptz is null or l.bucket < %(until)s::timestamptz)
order by l.event_id
limit %(limit)s
for update of l skip locked
"""
_UNFIXED = """
select event_id, event_type, kafka_partition, event->>'timestamp', raw_drop_from
from late_events
where raw_drop_from is not null and raw_fixed_at is null
order by event_id
limit %s
"""
# Held by whoever rewrites raw pieces (any constant other than rollup_store.SCHEMA_LOCK): two runs
# rewriting one piece from their own reads would each put back the id the other took out.
_RAW_FIX_LOCK = 0x7461_6C72


@dataclass(frozen=True)
class Folded:
    events: int  # late events added to the rollups
    cells: int  # (minute, event_type, source, partition) cells changed
    duplicates: int = 0  # late events found to be copies of events stored before: not added

    @property
    def rows(self) -> int:
        """Ledger rows settled: call again while this is not 0."""
        return self.events + self.duplicates


def fold_late(
    settings: Settings, limit: int = 100_000, topic: str | None = None, until: datetime | None = None
) -> Folded:
    """Fold up to `limit` late events whose hour has closed; call again until it settles 0 rows.
    `topic`: whose partition watermarks decide what is closed (default: the events topic).
    `until`: only events of minutes before this (the orchestrator's hourly partitions).
    Before returning, raw storage is put right for every row folded so far, by this run or one
    that died."""
    with rollup_store.connect(settings) as conn:
        folded = _fold(conn, settings, limit, topic or settings.events_topic, until)
        _fix_raw(conn, settings, limit)
    return folded


def pending(settings: Settings, until: datetime | None = None) -> int:
    """Late events not folded yet (what answers show as `late_count`), of minutes before `until`."""
    with rollup_store.connect(settings, connect_timeout=5) as conn:
        (n,) = conn.execute(
            "select count(*) from late_events where folded_at is null"
            " and (%(until)s::timestamptz is null or bucket < %(until)s::timestamptz)",
            {"until": until},
        ).fetchone()
    return n


def _fold(conn: psycopg.Connection, settings: Settings, limit: int, topic: str, until: datetime | None) -> Folded:
    """Stage 1, one transaction: decide, add what is not a duplicate, record the decisions."""
    with conn.transaction():
        rows = conn.execute(
            _PENDING,
            {"topic": topic, "lateness": f"{settings.allowed_lateness_s} seconds", "limit": limit, "until": until},
        ).fetchall()
        if not rows:
            return Folded(0, 0)
        decisions = late_copies.decide(settings, _beyond_horizon(rows, settings.dedup_horizon_s))
        cells = _late_cells(rows, decisions.duplicates)
        _add_cells(conn, cells)
        _mark_folded(conn, rows, decisions)
        if cells:
            rollup_store.bump_revision(conn)
        return Folded(sum(acc.count for acc in cells.values()), len(cells), len(decisions.duplicates))


def _fix_raw(conn: psycopg.Connection, settings: Settings, limit: int) -> None:
    """Stage 2: take out of raw storage what committed decisions say it must lose, then mark those
    rows fixed. Dying before the mark commits only means the next run takes out nothing new."""
    while True:
        with conn.transaction():
            conn.execute("select pg_advisory_xact_lock(%s)", (_RAW_FIX_LOCK,))
            rows = conn.execute(_UNFIXED, (limit,)).fetchall()
            if not rows:
                return
            late_copies.remove(
                settings,
                [late_copies.Removal(i, et, shard, _second(ts), tuple(drop)) for i, et, shard, ts, drop in rows],
            )
            conn.execute(
                "update late_events set raw_fixed_at = now() where event_id = any(%s)", ([r[0] for r in rows],)
            )
        if len(rows) < limit:
            return


def _beyond_horizon(rows: list[tuple], horizon: int) -> list[late_copies.LateCopy]:
    """The rows to look up in raw storage. Only an event that was later than the dedup horizon when
    it came can be a copy the dataflow had forgotten: nearer ones were checked against the ids it
    keeps. Looking up only those keeps the raw reads to the very late few."""
    out = []
    for event_id, _b, event_type, _s, partition, event, pos, wm in rows:
        second = _second(event["timestamp"])
        if not horizon or wm is None or second < wm - horizon:
            out.append(late_copies.LateCopy(event_id, event_type, partition, second, pos))
    return out


def _late_cells(rows: list[tuple], duplicates: set[str]) -> dict[tuple, Acc]:
    """(minute, event_type, source, partition) -> the late events to add there."""
    cells: dict[tuple, Acc] = defaultdict(Acc)
    for event_id, bucket, event_type, source, partition, event, _pos, _wm in rows:
        if event_id in duplicates:
            continue
        value = event.get("value")
        cells[(int(bucket.timestamp()), event_type, source, partition)].add(
            None if value is None else float(value), event.get("user_id")
        )
    return cells


def _add_cells(conn: psycopg.Connection, cells: dict[tuple, Acc]) -> None:
    hours: dict[tuple, Acc] = defaultdict(Acc)
    rows = []
    for (minute, event_type, source, partition), late in cells.items():
        rows.append(RollupRow(minute, event_type, source, partition, late, True))
        hours[(hour_of(minute), event_type, source, partition)].merge(late)
    rows += [RollupRow(h, et, src, p, late, True, HOUR_S) for (h, et, src, p), late in hours.items()]
    rollup_store.add_rows(conn, rows)


def _mark_folded(conn: psycopg.Connection, rows: list[tuple], decisions: late_copies.Decisions) -> None:
    conn.execute(
        "update late_events set folded_at = now(), duplicate = (event_id = any(%s)) where event_id = any(%s)",
        (list(decisions.duplicates), [r[0] for r in rows]),
    )
    if decisions.drop_from:
        with conn.cursor() as cur:
            cur.executemany(
                "update late_events set raw_drop_from = %s::bigint[] where event_id = %s",
                [(pieces, event_id) for event_id, pieces in decisions.drop_from.items()],
            )


def _second(timestamp: str) -> int:
    """Whole epoch second of an event time as the ledger stores it (ISO 8601), as raw chunks use."""
    return int(datetime.fromisoformat(timestamp).timestamp() // 1)
