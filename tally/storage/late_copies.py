"""Copies of an event that arrive after the dedup horizon: found and stored once by the correction step.

The dataflow remembers event ids for the dedup horizon (tally.dedup). A copy that comes after
that is late as well (its event time is the original's, over an hour behind the watermark), so the
dataflow puts it in the late ledger and in raw storage a second time. Before the correction step
adds late events to the rollups, it looks at the second of raw storage of each one that was later
than the horizon when it came (any nearer copy was caught by dedup), where every copy of the event
is: copies share the event id (so the Kafka partition, which is the chunk's shard), the type and
the time (so the slot: the second's own, or its 10 s window's).

A ledgered copy sits in a chunk piece that starts at or before its own stream position; any piece
starting after it holds a later copy. So among the pieces holding the id:
- two or more start at or before the ledgered position: an earlier copy was stored (and counted)
  before; the ledgered one is a duplicate, not to be counted, and its piece loses it;
- pieces starting after it hold later copies (beyond the horizon of the ledgered one, which the
  ledger kept out by its key): they lose it.
This relies on dedup being on: within a flush, only dedup keeps two copies out of one piece.

Deciding and removing are two steps (`decide`, then `remove`), because the decision must be
committed before raw storage changes: once the extra copies are gone, the evidence that the
ledgered one was a duplicate is gone with them. The correction step records each decision (the
pieces that must lose the id) in the ledger and removes from exactly those pieces afterwards. A
piece is rewritten under its own key, with its remaining TTL, and only if it still holds an id to
lose, so removing twice changes nothing.

Not covered: a copy of a late event that comes beyond the horizon after that event was folded. The
ledger keeps it out of the counts (its key is taken), but raw storage holds it twice; readers and
the reconciliation count an event_id once.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import msgspec

from tally.settings import Settings
from tally.storage import raw_events


class _Id(msgspec.Struct):
    event_id: str


_ids = msgspec.json.Decoder(list[_Id])
_lines = msgspec.json.Decoder(list[msgspec.Raw])

Slot = tuple[str, int, int]  # (event_type, shard, second)


@dataclass(frozen=True)
class LateCopy:
    event_id: str
    event_type: str
    shard: int
    second: int  # of event time
    position: int | None  # of the ledgered copy; None for rows ledgered before positions were kept


@dataclass
class Decisions:
    duplicates: set[str] = field(default_factory=set)  # ledgered events stored (and counted) before
    # event_id -> first_offsets of the pieces of its slot that must lose it (sorted, never empty)
    drop_from: dict[str, list[int]] = field(default_factory=dict)


@dataclass(frozen=True)
class Removal:
    """A recorded decision: the pieces `drop_from` of the event's slot no longer hold `event_id`."""

    event_id: str
    event_type: str
    shard: int
    second: int
    drop_from: tuple[int, ...]


def decide(settings: Settings, late: list[LateCopy]) -> Decisions:
    """Which ledgered events are copies of an event stored earlier, and which pieces must lose
    which id so that raw storage keeps one copy of each. Reads raw storage, never writes it."""
    if not late:
        return Decisions()
    cluster = raw_events.cluster(settings)
    try:
        pieces = _read_slots(cluster.connect(settings.cassandra_keyspace), {_slot(c) for c in late})
    finally:
        cluster.shutdown()
    out = Decisions()
    for c in late:
        holding = sorted(f for f, piece in pieces[_slot(c)].items() if c.event_id in piece.ids)
        at = c.position if c.position is not None else max(holding, default=0)
        earlier = [f for f in holding if f <= at]
        drop = [f for f in holding if f > at]
        if len(earlier) >= 2:
            out.duplicates.add(c.event_id)
            drop.append(earlier[-1])
        if drop:
            out.drop_from[c.event_id] = sorted(drop)
    return out


def remove(settings: Settings, removals: list[Removal]) -> int:
    """Take each removal's id out of exactly its recorded pieces; return the copies taken out.
    An id already gone (a piece already rewritten, or deleted once empty) is left as it is."""
    if not removals:
        return 0
    cluster = raw_events.cluster(settings)
    try:
        session = cluster.connect(settings.cassandra_keyspace)
        pieces = _read_slots(session, {(r.event_type, r.shard, r.second) for r in removals})
        # By the piece itself: a wide row holds several seconds, whose removals must meet in one rewrite.
        drop: dict[tuple[str, int, int, int], set[str]] = defaultdict(set)
        for r in removals:
            held = pieces[(r.event_type, r.shard, r.second)]
            for first in r.drop_from:
                if first in held:  # otherwise deleted when it lost its last event, by an earlier run
                    drop[(r.event_type, r.shard, held[first].slot, first)].add(r.event_id)
        return _rewrite(session, pieces, drop)
    finally:
        cluster.shutdown()


def _slot(c: LateCopy) -> Slot:
    return c.event_type, c.shard, c.second


@dataclass(frozen=True)
class _Piece:
    ids: list[str]
    lines: list
    ttl: int | None
    slot: int  # the row's slot (us): the event's own second's, or its window's (raw_events)


def _read_slots(session, slots: set[Slot]) -> dict[Slot, dict[int, _Piece]]:
    """Every piece that may hold an event of each slot's second, narrow or wide: first_offset -> piece."""
    from cassandra.concurrent import execute_concurrent_with_args

    select = session.prepare(
        "select first_offset, events, ttl(events) from event_chunks"
        " where event_type = ? and hour = ? and shard = ? and slot = ?"
    )
    rows = sorted({(et, shard, row_slot) for et, shard, second in slots for row_slot in raw_events.slots_of(second)})
    args = [(et, *_hour_slot(row_slot, shard)) for et, shard, row_slot in rows]
    found: dict[tuple[str, int, int], dict[int, _Piece]] = {}
    results = execute_concurrent_with_args(session, select, args, concurrency=32)
    for (et, shard, row_slot), (ok, result) in zip(rows, results, strict=True):
        if not ok:
            raise result
        found[(et, shard, row_slot)] = {
            first: _Piece([i.event_id for i in _ids.decode(body)], _lines.decode(body), ttl, row_slot)
            for first, body, ttl in result
        }
    return {
        (et, shard, second): {
            first: piece
            for row_slot in raw_events.slots_of(second)
            for first, piece in found[(et, shard, row_slot)].items()
        }
        for et, shard, second in slots
    }


def _rewrite(session, pieces: dict[Slot, dict[int, _Piece]], drop: dict[tuple[str, int, int, int], set[str]]) -> int:
    from cassandra.concurrent import execute_concurrent

    by_key = {(et, shard, p.slot, first): p for (et, shard, _s), held in pieces.items() for first, p in held.items()}
    insert = session.prepare(raw_events.INSERT_CHUNK)
    delete = session.prepare(raw_events.DELETE_CHUNK)
    statements, removed = [], 0
    for (et, shard, row_slot, first), ids in sorted(drop.items()):
        piece = by_key[(et, shard, row_slot, first)]
        kept = [bytes(line) for i, line in zip(piece.ids, piece.lines, strict=True) if i not in ids]
        if len(kept) == len(piece.lines):
            continue  # already rewritten by an earlier run
        removed += len(piece.lines) - len(kept)
        key = (et, *_hour_slot(row_slot, shard), first)
        if kept:
            statements.append((insert, (*key, b"[" + b",".join(kept) + b"]", piece.ttl or 0)))
        else:
            statements.append((delete, key))
    for ok, result in execute_concurrent(session, statements, concurrency=32, raise_on_first_error=False):
        if not ok:
            raise result
    return removed


def _hour_slot(slot_us: int, shard: int) -> tuple:
    """(hour, shard, slot): the clustering prefix of the chunk rows of one slot and shard."""
    hour, slot = raw_events.chunk_key(slot_us)
    return hour, shard, slot
