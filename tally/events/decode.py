"""Decoding bodies and Kafka messages into events, batch first.

A whole body is decoded by msgspec in one C call, and only when that fails is it decoded item by
item to say which events are bad and why. What msgspec cannot check is checked after it, on the
whole batch at C speed where the batch is clean, and per event only where it is not:
- `event_type` against its pattern, once per distinct type;
- C0 control characters in text, looked for in the raw JSON (they can only arrive escaped);
- the event time between MIN_TIMESTAMP and `not_after` (the caller's clock plus its allowance).
"""

from __future__ import annotations

import re
from datetime import datetime
from operator import attrgetter

import msgspec

from tally.events.schema import CONTROL_CHARS, EVENT_TYPE_PATTERN, MIN_TIMESTAMP, BodyError, Event, EventError

_one = msgspec.json.Decoder(Event)
_many = msgspec.json.Decoder(list[Event])
_raw_many = msgspec.json.Decoder(list[msgspec.Raw])
_TYPE_OK = re.compile(EVENT_TYPE_PATTERN).match
_TYPE_ERROR = f"Expected `str` matching regex {EVENT_TYPE_PATTERN!r}"
_valid_types: set[str] = set()
# An escape that decodes to a C0 control: \u0000-\u001f, \b \f \n \r \t, after an even run of
# backslashes (an escaped backslash followed by "n" is not a newline). Raw control bytes inside a
# JSON string are malformed JSON, which msgspec refuses itself.
_CONTROL_ESCAPE = re.compile(rb"(?<!\\)(?:\\\\)*\\(?:u00[01][0-9a-fA-F]|[bfnrt])")
_CONTROL = re.compile(f"[{CONTROL_CHARS}]")
_LONE_HIGH_SURROGATE = re.compile(rb"(?<!\\)(?:\\\\)*\\u[dD][89abAB][0-9a-fA-F]{2}(?!\\u[dD][c-fC-F])")
_PATH = re.compile(r" - at `\$(?:\[\d+\])?\.?([^`]*)`$")
_FIELD_IN_MESSAGE = re.compile(r"field `([^`]+)`")
_timestamp = attrgetter("timestamp")


def decode_batch(body: bytes, not_after: datetime | None = None) -> tuple[list[Event], list[EventError]]:
    """Decode one JSON event or a JSON array of events."""
    stripped = body.lstrip()
    if not stripped:
        raise BodyError("the body is empty; send a JSON object, a JSON array, or NDJSON")
    if stripped[:1] == b"{":
        try:
            return _checked([_one.decode(body)], [], body, not_after)
        except msgspec.ValidationError as e:
            return [], [_error(0, e)]
        except (msgspec.DecodeError, UnicodeDecodeError, RecursionError) as e:
            raise BodyError("the body is " + _unreadable(e, body)) from e
    if stripped[:1] != b"[":
        raise BodyError("the body must be a JSON object or a JSON array of objects")
    try:
        events = _many.decode(body)
    except msgspec.ValidationError:
        pass
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError) as e:
        raise BodyError("the body is " + _unreadable(e, body)) from e
    else:
        if not events:
            raise BodyError("the body holds no events: the array is empty")
        return _checked(events, [], body, not_after)
    try:
        items = _raw_many.decode(body)
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError) as e:  # a type error came first
        raise BodyError("the body is " + _unreadable(e, body)) from e
    return _checked(*_decode_each(items), body, not_after)


def ndjson_lines(body: bytes) -> list[bytes]:
    lines = [s for line in body.split(b"\n") if (s := line.strip())]
    if not lines:
        raise BodyError("the body has no NDJSON lines")
    return lines


def decode_messages(items: list[bytes], not_after: datetime | None = None) -> tuple[list[Event], list[EventError]]:
    """Decode one JSON event per item (NDJSON lines, Kafka message values) in a single msgspec call;
    only if that fails, item by item to find the bad ones. Errors carry the item's index."""
    if not items:
        return [], []
    joined = b"[" + b",".join(items) + b"]"
    try:
        return _checked(_many.decode(joined), [], joined, not_after)
    except (msgspec.ValidationError, msgspec.DecodeError, UnicodeDecodeError, RecursionError):
        return _checked(*_decode_each(items), joined, not_after)


def _decode_each(items: list) -> tuple[list[Event], list[EventError]]:
    events: list[Event] = []
    errors: list[EventError] = []
    for i, raw in enumerate(items):
        try:
            events.append(_one.decode(raw))
        except msgspec.ValidationError as e:
            errors.append(_error(i, e))
        except (msgspec.DecodeError, UnicodeDecodeError, RecursionError) as e:
            errors.append(EventError(i, None, _unreadable(e, raw)))
    return events, errors


def _checked(
    events: list[Event], errors: list[EventError], raw: bytes, not_after: datetime | None
) -> tuple[list[Event], list[EventError]]:
    """Apply the rules msgspec cannot; each costs a C-speed pass unless some event breaks it."""
    bad: dict[int, EventError] = {}  # position among `events` -> its first error
    types = {e.event_type for e in events}
    if not types <= _valid_types:
        bad_types = _bad_types(types)
        for i, e in enumerate(events):
            if e.event_type in bad_types:
                bad.setdefault(i, EventError(-1, "event_type", _TYPE_ERROR))
    if b"\\" in raw and _CONTROL_ESCAPE.search(raw):
        for i, e in enumerate(events):
            if (field := _control_field(e)) is not None:
                bad.setdefault(i, EventError(-1, field, "must not contain control characters (U+0000-U+001F)"))
    if events:
        low, high = min(map(_timestamp, events)), max(map(_timestamp, events))
        if low < MIN_TIMESTAMP or (not_after is not None and high > not_after):
            for i, e in enumerate(events):
                if e.timestamp < MIN_TIMESTAMP:
                    bad.setdefault(i, EventError(-1, "timestamp", "must be 1970-01-01T00:00:00Z or later"))
                elif not_after is not None and e.timestamp > not_after:
                    message = f"is too far ahead of the server's clock (later than {not_after.isoformat()})"
                    bad.setdefault(i, EventError(-1, "timestamp", message))
    if not bad:
        return events, errors
    return _moved_to_errors(events, errors, bad)


def _bad_types(types: set[str]) -> set[str]:
    """The types breaking the pattern; good ones are remembered (a few thousand in practice, bounded)."""
    bad = set()
    for t in types - _valid_types:
        if _TYPE_OK(t) and t[-1:] != "\n":  # `$` also matches before a final newline
            if len(_valid_types) > 100_000:
                _valid_types.clear()
            _valid_types.add(t)
        else:
            bad.add(t)
    return bad


def _control_field(e: Event) -> str | None:
    for name in ("event_id", "source", "user_id"):
        value = getattr(e, name)
        if value is not None and _CONTROL.search(value):
            return name
    for key, value in (e.attributes or {}).items():
        if _CONTROL.search(key) or (isinstance(value, str) and _CONTROL.search(value)):
            return "attributes"
    return None


def _moved_to_errors(
    events: list[Event], errors: list[EventError], bad: dict[int, EventError]
) -> tuple[list[Event], list[EventError]]:
    """Events listed in `bad` become errors at their index in the original body."""
    failed = {e.index for e in errors}
    indexes = (i for i in range(len(events) + len(errors)) if i not in failed)
    kept = []
    errors = list(errors)
    for j, (index, event) in enumerate(zip(indexes, events, strict=False)):
        if j in bad:
            errors.append(EventError(index, bad[j].field, bad[j].message))
        else:
            kept.append(event)
    errors.sort(key=lambda e: e.index)
    return kept, errors


def _unreadable(exc: Exception, raw: bytes) -> str:
    if isinstance(exc, UnicodeDecodeError):
        return f"not valid UTF-8 (byte {exc.start} of the string at fault)"
    if isinstance(exc, RecursionError):
        return "not valid JSON: nested too deeply"
    if "truncated" in str(exc) and _LONE_HIGH_SURROGATE.search(bytes(raw)):
        # msgspec reads past a high surrogate escape for its low half, and at the end of the input
        # says "truncated": the input is whole, the surrogate is alone.
        return "not valid JSON: a \\uD800-\\uDBFF escape without the low surrogate that must follow it"
    return f"not valid JSON: {exc}"


def _error(index: int, exc: msgspec.ValidationError) -> EventError:
    """Turn msgspec's `Expected ... - at `$[3].event_id`` into (index, field, reason)."""
    text = str(exc)
    m = _PATH.search(text)
    message = text[: m.start()] if m else text
    field = m.group(1) if m and m.group(1) else None
    if field is None and (f := _FIELD_IN_MESSAGE.search(message)):
        field = f.group(1)  # "missing required field `x`", "unknown field `x`"
    if field:
        field = field.split("[", 1)[0] or field
    return EventError(index, field, message)
