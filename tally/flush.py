"""What one flush of a partition carries to the stores, and where each event sits in the stream."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from math import floor
from operator import attrgetter

from tally.cells import RollupRow
from tally.events.schema import Event

# A Kafka message holds up to 2**LINE_BITS events (NDJSON); an event's position in the stream is
# offset << LINE_BITS | line: unique, ordered, and the same every time the message is read again.
LINE_BITS = 10
_timestamp = attrgetter("timestamp")


def position(offset: int, line: int) -> int:
    return offset << LINE_BITS | line


def seconds_of(events: list[Event]) -> list[int]:
    """Event time in whole epoch seconds (floor), computed once per event for rollups and raw chunks
    (in maps of C functions: no bytecode runs per event)."""
    return list(map(floor, map(datetime.timestamp, map(_timestamp, events))))


class RawBatch:
    """Valid events as raw storage writes them: grouped by (event_type, second of event time), each
    group holding its stream positions and JSON lines in stream order. Grouping happens in the
    dataflow's one pass over a batch, so the writer does no work per event."""

    __slots__ = ("chunks", "count")

    def __init__(self) -> None:
        self.chunks: dict[tuple[str, int], tuple[list[int], list[bytes]]] = {}
        self.count = 0

    def __len__(self) -> int:
        return self.count

    def add(self, events: list[Event], seconds: list[int], positions: list[int], lines: list[bytes]) -> None:
        chunks = self.chunks
        for event, second, pos, line in zip(events, seconds, positions, lines, strict=True):
            key = (event.event_type, second)
            chunk = chunks.get(key)
            if chunk is None:
                chunks[key] = ([pos], [line])
            else:
                chunk[0].append(pos)
                chunk[1].append(line)
        self.count += len(events)

    def items(self) -> list[tuple[int, bytes]]:
        """Every (position, JSON line), in stream order."""
        pairs = (pair for positions, lines in self.chunks.values() for pair in zip(positions, lines, strict=True))
        return sorted(pairs)

    @classmethod
    def of(cls, raw: list[tuple[int, Event, bytes]]) -> RawBatch:
        """From (position, event, line) triples, in the order given."""
        batch = cls()
        events = [e for _p, e, _v in raw]
        batch.add(events, seconds_of(events), [p for p, _e, _v in raw], [v for _p, _e, v in raw])
        return batch


@dataclass
class Flush:
    """Everything one partition must make durable, in order, before committing `next_offset`."""

    partition: int
    next_offset: int
    watermark: int | None
    rows: list[RollupRow]
    raw: RawBatch  # every valid event, late ones included: raw storage keeps all of them
    late: list[Event]
    invalid: list[tuple[int, bytes, str]]  # (position, line, reason) for the dead-letter topic
    # Stream position of each late event (parallel to `late`; empty when the caller gave none): the
    # correction step tells a late event's own raw copy from an earlier one by it.
    late_positions: list[int] = field(default_factory=list)
    # False: a flush between commits while a backlog drains (dataflows.aggregate): raw events and dead
    # letters only, no rows, and the offset does not move. A committing flush counts in `partials`
    # the flushes before it whose raw events it does not carry although its rows include them.
    commit: bool = True
    partials: int = 0
