"""The event schema: the single source of truth for what an event is.

The field types and their limits live here; `tally.events.decode` turns bodies and Kafka messages
into `Event`s under this schema, plus the few rules msgspec cannot express (see there). Both the
API and the dataflow decode with it, so whatever the stores would refuse is refused at ingest.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated

import msgspec

# Values are summed in float64 (the dataflow's cells, PostgreSQL's sum over rows), so a value is at
# most 1e289: any sum of fewer than 2**63 of them (a bigint count) stays under float64's 1.8e308,
# where near-maximal values summed to infinity and made every aggregate over them fail. This also
# keeps out the infinity JSON can spell (1e999).
VALUE_MAX = 1e289

EventId = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
EVENT_TYPE_PATTERN = r"^[a-z0-9_.-]{1,64}$"
# msgspec checks a `pattern` with Python's `re` on every value (0.4 us an event, 40 % of a decode);
# the pattern is checked per distinct type after decoding instead (tally.events.decode).
EventType = Annotated[str, msgspec.Meta(min_length=1, max_length=64, extra_json_schema={"pattern": EVENT_TYPE_PATTERN})]
Timestamp = Annotated[datetime, msgspec.Meta(tz=True)]
Source = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
UserId = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
Value = Annotated[float, msgspec.Meta(ge=-VALUE_MAX, le=VALUE_MAX)]
AttrKey = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
AttrValue = Annotated[str, msgspec.Meta(max_length=256)] | bool | int | Value
Attributes = Annotated[dict[AttrKey, AttrValue], msgspec.Meta(max_length=32)]

MAX_EVENT_ID = 128
# Event times before the Unix epoch are refused: nothing Tally counts happened then, and times far
# outside it overflow date arithmetic (year 1 at +05:00 is before datetime.min in UTC).
MIN_TIMESTAMP = datetime(1970, 1, 1, tzinfo=UTC)
# Text fields must not hold C0 control characters (U+0000-U+001F): PostgreSQL refuses U+0000 in
# text and jsonb, and none of them belongs in an id, a source or a label.
CONTROL_CHARS = "\x00-\x1f"


# The source an event sent without one is counted under (it is stored without it: omit_defaults).
UNKNOWN_SOURCE = "unknown"


class Event(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True, gc=False):
    """One event. `event_id` is the dedup key; `timestamp` is the event time."""

    # gc=False: events are decoded by the hundred thousand and hold only strings, numbers and a
    # flat dict of them, so they can never be part of a reference cycle. Tracked, the ones with
    # attributes filled the collector's young generation: untracked, the dataflow's collector
    # time halved (tally_dataflow_gc_seconds) and a batch replay ran ~10 % faster.

    event_id: EventId
    event_type: EventType
    timestamp: Timestamp
    source: Source = UNKNOWN_SOURCE
    user_id: UserId | None = None
    value: Value | None = None
    attributes: Attributes | None = None


@dataclass(frozen=True, slots=True)
class EventError:
    index: int
    field: str | None
    message: str

    def as_dict(self) -> dict:
        return {"index": self.index, "field": self.field, "message": self.message}

    @property
    def reason(self) -> str:
        return f"{self.field}: {self.message}" if self.field else self.message


class BodyError(ValueError):
    """The body as a whole cannot be read (not JSON, not an object or array)."""


_encoder = msgspec.json.Encoder()


def encode_event(event: Event) -> bytes:
    return _encoder.encode(event)
