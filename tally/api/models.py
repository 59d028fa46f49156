"""Response shapes, for the OpenAPI docs and clients. Hot routes encode with msgspec directly."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field


class EventErrorOut(BaseModel):
    index: int = Field(description="Position of the event in the body (array index or NDJSON line).")
    field: str | None = Field(description="The field at fault, if one is.")
    message: str


class IngestResult(BaseModel):
    accepted: int = Field(description="Events acknowledged by Kafka (acks=all).")
    rejected: int
    errors: list[EventErrorOut]


class Point(BaseModel):
    t: datetime = Field(description="Bucket start, UTC.")
    count: int | None = None
    sum: float | None = None
    min: float | None = None
    max: float | None = None
    avg: float | None = None
    unique_users: int | None = None
    late_count: int | None = Field(
        None,
        description="Events that arrived after this bucket closed and are not in count yet (the late ledger);"
        " the correction step moves them into count.",
    )
    final: bool = Field(
        description="True once no event can change this point: every partition's watermark is past its end"
        " by the allowed lateness (later events go to the late ledger)."
    )


class Series(BaseModel):
    group: dict[str, str]
    points: list[Point]


class AggregateResult(BaseModel):
    from_: datetime = Field(alias="from")
    to: datetime
    granularity: str
    metrics: list[str]
    group_by: list[str]
    series: list[Series]
    as_of: datetime | None = Field(description="When the dataflow last committed rollups.")
    watermark: datetime | None = Field(
        description="The event time every Kafka partition has reached; null until each has seen an event."
    )


class FilteredEvents(BaseModel):
    events: list[dict[str, Any]] = Field(description="Events as ingested, newest first, ties by event_id.")
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null on the last page.")


class Health(BaseModel):
    status: str
    checks: dict[str, str]


class ProblemError(BaseModel):
    field: str | None = Field(description="The parameter or field at fault; null when the request as a whole is.")
    message: str


class Problem(BaseModel):
    """An error as problem details (RFC 9457), sent as application/problem+json (tally.api.problems)."""

    type: str = Field(description="Always about:blank: `title` and `status` say what went wrong.")
    title: str
    status: int
    detail: str = Field(description="The field or parameter and the reason, for a person to read.")
    errors: list[ProblemError] | None = Field(None, description="Each field at fault and why, for a program.")
