"""The raw-event suite: a sample of Cassandra's event chunks (expectations.raw_sample), as a pandas
frame, held to the rules ingest enforces, so an event that got past them (written by another
producer, a migration, a bug) is found.

Every limit comes from tally.events.schema, the one definition of an event: the field length and
attribute limits are read from its msgspec annotations, not copied. An event time ahead of the
check's clock by more than TALLY_MAX_AHEAD_S is only a WARN: the stored event is whole, it is a
client clock (or a producer around the API) that went wrong, and its bucket still closes.
"""

from __future__ import annotations

from datetime import datetime
from typing import get_args

import msgspec

from expectations.outcome import with_severity_meta
from expectations.raw_sample import StoredEvent
from tally.events.schema import (
    CONTROL_CHARS,
    EVENT_TYPE_PATTERN,
    MIN_TIMESTAMP,
    Attributes,
    AttrKey,
    AttrValue,
    Event,
    EventId,
    Source,
    UserId,
)
from tally.settings import Settings
from tally.storage.raw_events import SLOT_US, WIDE_EARLY_US, WINDOW_US, us

SUITE = "tally.raw_events"
_strict = msgspec.json.Decoder(Event)
# C0 controls as a printable regex ("[\x00-\x1f]" spelled with escapes), from the schema's range.
CONTROL_REGEX = "[" + CONTROL_CHARS.encode("unicode_escape").decode() + "]"


def _meta(alias):
    """The msgspec.Meta of an Annotated type (its limits)."""
    return get_args(alias)[1]


def _text_attribute_meta():
    return next(_meta(m) for m in get_args(AttrValue) if get_args(m)[:1] == (str,))


def frame(stored: list[StoredEvent], checked_at: datetime):
    """One row per stored event, with the measures the suite checks. A field of the wrong JSON
    type becomes null, so the not-null expectations report it."""
    import pandas as pd

    now_us = us(checked_at)
    columns = list(_row(StoredEvent("", 0, checked_at, None), now_us))  # an empty sample has them too
    # dtype object: values as Python gives them (None stays None, ints stay exact), not pandas' guesses.
    return pd.DataFrame([_row(s, now_us) for s in stored], columns=columns, dtype=object)


def _row(s: StoredEvent, now_us: int) -> dict:
    e = s.event or {}
    at = _time_us(e.get("timestamp"))
    attrs = e.get("attributes") or {}
    attrs = attrs if isinstance(attrs, dict) else {}
    keys = list(attrs)
    texts = [v for v in attrs.values() if isinstance(v, str)]
    return {
        "readable": s.event is not None,
        "schema_error": _schema_error(s.event),
        "chunk_event_type": s.chunk_event_type,
        "shard": s.shard,
        "event_id": _text(e.get("event_id")),
        "event_type": _text(e.get("event_type")),
        "source": _text(e.get("source", "unknown")) if s.event is not None else None,  # omitted: the default
        "user_id": _text(e.get("user_id")),
        "timestamp_s": None if at is None else at / 1e6,
        "seconds_ahead": None if at is None else (at - now_us) / 1e6,
        "slot_offset_us": None if at is None else at - us(s.slot),
        "attribute_count": len(attrs),
        "attribute_key_length_min": min(map(len, keys), default=None),
        "attribute_key_length_max": max(map(len, keys), default=None),
        "attribute_text_length_max": max(map(len, texts), default=None),
        # Keys and text values, space-joined, for the control-character check (a space is not one).
        "attribute_text": " ".join(keys + texts) or None,
    }


def _schema_error(event: dict | None) -> str | None:
    """What the strict decoder says of the event (unknown fields, wrong types, msgspec's limits)."""
    if event is None:
        return None
    try:
        _strict.decode(msgspec.json.encode(event))
    except msgspec.ValidationError as e:
        return str(e)
    return None


def _text(value) -> str | None:
    return value if isinstance(value, str) else None


def _time_us(value) -> int | None:
    if not isinstance(value, str):
        return None
    try:
        t = datetime.fromisoformat(value)
    except ValueError:
        return None
    return us(t) if t.tzinfo is not None else None  # the schema requires a zone


def build_suite(settings: Settings):
    """The suite, built fresh (GX is imported here: it costs seconds, Dagster loads often). All but
    the clock check keep GX's default severity, critical (ERROR in Dagster): an event breaking them
    got past ingest."""
    import great_expectations as gx
    import great_expectations.expectations as gxe
    from great_expectations.expectations.metadata_types import FailureSeverity

    suite = gx.ExpectationSuite(
        name=SUITE, meta={"dataset": "Cassandra event_chunks: the newest events of the window's event types"}
    )
    for expectation in (*_record_rules(gxe), *_limit_rules(gxe)):
        suite.add_expectation(expectation)
    suite.add_expectation(
        gxe.ExpectColumnValuesToBeBetween(
            column="seconds_ahead",
            max_value=settings.max_ahead_s,
            severity=FailureSeverity.WARNING,
            description=f"timestamp is at most {settings.max_ahead_s} s (TALLY_MAX_AHEAD_S) ahead of the check's clock",
        )
    )
    return with_severity_meta(suite)


def _record_rules(gxe) -> list:
    """What every stored event is: readable, whole, under its own key, not before the epoch."""
    return [
        gxe.ExpectColumnValuesToBeInSet(
            column="readable", value_set=[True], description="every chunk is a JSON array of event objects"
        ),
        gxe.ExpectColumnValuesToBeNull(column="schema_error", description="every event decodes under the event schema"),
        *(
            gxe.ExpectColumnValuesToNotBeNull(column=column, description=f"{column} is present and of its type")
            for column in ("event_id", "event_type", "timestamp_s")
        ),
        gxe.ExpectColumnValuesToMatchRegex(
            column="event_type", regex=EVENT_TYPE_PATTERN, description="event_type matches the pattern ingest enforces"
        ),
        gxe.ExpectColumnPairValuesToBeEqual(
            column_A="event_type",
            column_B="chunk_event_type",
            ignore_row_if="either_value_is_missing",
            description="an event is stored under its own event_type",
        ),
        gxe.ExpectColumnValuesToBeBetween(
            column="slot_offset_us",
            min_value=WIDE_EARLY_US - WINDOW_US,
            max_value=SLOT_US,
            strict_max=True,
            description="an event is stored in its own second's slot, or its 10 s window's",
        ),
        gxe.ExpectColumnValuesToBeBetween(
            column="timestamp_s",
            min_value=MIN_TIMESTAMP.timestamp(),
            description=f"timestamp is {MIN_TIMESTAMP.date()} or later",
        ),
    ]


def _limit_rules(gxe) -> list:
    """The schema's lengths and counts, and no control characters in any text."""
    rules = []
    for column, alias in (("event_id", EventId), ("source", Source), ("user_id", UserId)):
        meta = _meta(alias)
        rules.append(
            gxe.ExpectColumnValueLengthsToBeBetween(
                column=column,
                min_value=meta.min_length,
                max_value=meta.max_length,
                description=f"{column} is {meta.min_length}-{meta.max_length} characters long",
            )
        )
    most, key, text = _meta(Attributes).max_length, _meta(AttrKey), _text_attribute_meta()
    rules += [
        gxe.ExpectColumnValuesToBeBetween(
            column="attribute_count", max_value=most, description=f"at most {most} attributes"
        ),
        gxe.ExpectColumnValuesToBeBetween(
            column="attribute_key_length_min", min_value=key.min_length, description="no attribute key is empty"
        ),
        gxe.ExpectColumnValuesToBeBetween(
            column="attribute_key_length_max",
            max_value=key.max_length,
            description=f"attribute keys are at most {key.max_length} characters long",
        ),
        gxe.ExpectColumnValuesToBeBetween(
            column="attribute_text_length_max",
            max_value=text.max_length,
            description=f"attribute text values are at most {text.max_length} characters long",
        ),
    ]
    # event_type too: its pattern's `$` also matches before a final newline, which ingest refuses.
    rules += [
        gxe.ExpectColumnValuesToNotMatchRegex(
            column=column, regex=CONTROL_REGEX, description=f"{column} has no control characters (U+0000-U+001F)"
        )
        for column in ("event_type", "event_id", "source", "user_id", "attribute_text")
    ]
    return rules
