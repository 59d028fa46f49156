"""Copies of an event that arrive after the dedup horizon: found and stored once by the correction step.

The dataflow remembers event ids for the dedup horizon (tally.dedup). A copy that comes after
that is late as well (its event time is the original's, over an hour behind the watermark), so the
dataflow puts it in the late ledger and in raw storage a second time. Before the correction step
adds late events to the rollups, it looks at the second of raw storage of each one that was later
than the horizon when it came (any nearer copy was caught by dedup), where every copy of the event
is: copies share the event id (so the Kafka partition, which is the chunk's shard), the type and
the time (so the slot).

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
        holding = sorted(f for f, (ids, _lines, _ttl) in pieces[_slot(c)].items() if c.event_id in ids)
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
    drop: dict[tuple[Slot, int], set[str]] = defaultdict(set)
    for r in removals:
        for first in r.drop_from:
            drop[((r.event_type, r.shard, r.second), first)].add(r.event_id)
    cluster = raw_events.cluster(settings)
    try:
        session = cluster.connect(settings.cassandra_keyspace)
        return _rewrite(session, _read_slots(session, {slot for slot, _first in drop}), drop)
    finally:
        cluster.shutdown()


def _slot(c: LateCopy) -> Slot:
    return c.event_type, c.shard, c.second


def _read_slots(session, slots: set[Slot]) -> dict[Slot, dict[int, tuple[list[str], list, int | None]]]:
    """Every piece of each slot: first_offset -> (event ids, JSON lines, remaining TTL)."""
    from cassandra.concurrent import execute_concurrent_with_args

    select = session.prepare(
        "select first_offset, events, ttl(events) from event_chunks"
        " where event_type = ? and hour = ? and shard = ? and slot = ?"
    )
    order = sorted(slots)
    args = [(et, *_hour_slot(second, shard)) for et, shard, second in order]
    out = {}
    results = execute_concurrent_with_args(session, select, args, concurrency=32)
    for slot, (ok, rows) in zip(order, results, strict=True):
        if not ok:
            raise rows
        out[slot] = {
            first: ([i.event_id for i in _ids.decode(body)], _lines.decode(body), ttl) for first, body, ttl in rows
        }
    return out


def _rewrite(session, pieces, drop: dict[tuple[Slot, int], set[str]]) -> int:
    from cassandra.concurrent import execute_concurrent

    insert = session.prepare(raw_events.INSERT_CHUNK)
    delete = session.prepare(raw_events.DELETE_CHUNK)
    statements, removed = [], 0
    for ((et, shard, second), first), ids in sorted(drop.items()):
        if first not in pieces[(et, shard, second)]:
            continue  # deleted when it lost its last event, by an earlier run
        piece_ids, lines, ttl = pieces[(et, shard, second)][first]
        kept = [bytes(line) for i, line in zip(piece_ids, lines, strict=True) if i not in ids]
        if len(kept) == len(lines):
            continue  # already rewritten by an earlier run
        removed += len(lines) - len(kept)
        key = (et, *_hour_slot(second, shard), first)
        if kept:
            statements.append((insert, (*key, b"[" + b",".join(kept) + b"]", ttl or 0)))
        else:
            statements.append((delete, key))
    for ok, result in execute_concurrent(session, statements, concurrency=32, raise_on_first_error=False):
        if not ok:
            raise result
    return removed


def _hour_slot(second: int, shard: int) -> tuple:
    """(hour, shard, slot): the clustering prefix of the chunk rows of one second and shard."""
    hour, slot = raw_events.chunk_key(second)
    return hour, shard, slot
