"""Query parameters shared by the query routes, checked into 422s that name the parameter."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from tally.api.problems import ParamError
from tally.events.schema import CONTROL_CHARS, EVENT_TYPE_PATTERN

# Filters by type or source become one SQL array or one Cassandra partition each: bounded.
MAX_FILTER_VALUES = 100
_TYPE_OK = re.compile(EVENT_TYPE_PATTERN).fullmatch
_CONTROL = re.compile(f"[{CONTROL_CHARS}\ud800-\udfff]")

# Far enough either way for any real query, near enough that day and bucket arithmetic on the
# bounds (a day added, an offset applied) stays inside what datetime and PostgreSQL can hold.
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(9000, 1, 1, tzinfo=UTC)


def time_range(start: datetime, end: datetime, max_span: timedelta | None = None) -> tuple[datetime, datetime]:
    """`from` and `to` as given, once they are aware, within [EARLIEST, LATEST] and in order."""
    for name, value in (("from", start), ("to", end)):
        if value.tzinfo is None:
            raise ParamError(name, "must be RFC 3339 with a UTC offset, e.g. 2026-11-26T10:00:00Z")
        if not EARLIEST <= value <= LATEST:
            raise ParamError(name, f"must be between {_iso(EARLIEST)} and {_iso(LATEST)}")
    if end <= start:
        raise ParamError("to", "must be after from")
    if max_span is not None and end - start > max_span:
        raise ParamError("to", f"must be at most {max_span.days} days after from")
    return start, end


def event_types(values: list[str]) -> list[str]:
    """Distinct event types, each one the schema allows (no other can have been stored)."""
    values = _bounded("event_type", values)
    for v in values:
        if not _TYPE_OK(v):
            raise ParamError("event_type", f"{v[:80]!r} is not an event type: it must match {EVENT_TYPE_PATTERN}")
    return values


def sources(values: list[str]) -> list[str]:
    values = _bounded("source", values)
    for v in values:
        if not 1 <= len(v) <= 64 or _CONTROL.search(v):
            raise ParamError("source", "must be 1 to 64 characters without control characters")
    return values


def _bounded(name: str, values: list[str]) -> list[str]:
    values = list(dict.fromkeys(values))
    if len(values) > MAX_FILTER_VALUES:
        raise ParamError(name, f"at most {MAX_FILTER_VALUES} values per request")
    return values


def comma_list(name: str, value: str | None, allowed: tuple[str, ...], default: list[str]) -> list[str]:
    if value is None or not value.strip():
        return default
    items = [v.strip() for v in value.split(",") if v.strip()]
    unknown = [v for v in items if v not in allowed]
    if unknown:
        raise ParamError(name, f"unknown value {unknown[0]!r}; choose from {', '.join(allowed)}")
    return list(dict.fromkeys(items))


def _iso(t: datetime) -> str:
    return t.isoformat().replace("+00:00", "Z")
