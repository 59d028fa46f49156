"""Response shapes, for the OpenAPI docs and clients. Hot routes encode with msgspec directly."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class EventErrorOut(BaseModel):
    index: int = Field(description="Position of the event in the body (array index or NDJSON line).")
    field: str | None = Field(description="The field at fault, if one is.")
    message: str


class IngestResult(BaseModel):
    accepted: int = Field(description="Events acknowledged by Kafka (acks=all).")
    rejected: int
    errors: list[EventErrorOut]


class Point(BaseModel):
    """A bucket's values: the built-in metrics asked for, and each named metric (GET /api/metrics)
    under its own name; null where the bucket has no rows its filter keeps."""

    model_config = ConfigDict(extra="allow")
    __pydantic_extra__: dict[str, float | int | None]

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


class ColumnSeries(BaseModel):
    """A series in `format=columns`: arrays of equal length, index i is one bucket."""

    model_config = ConfigDict(extra="allow")
    __pydantic_extra__: dict[str, list[float | int | None]]

    group: dict[str, str]
    t: list[int] = Field(description="Bucket starts, Unix seconds (UTC), ascending.")
    final: int = Field(
        description="How many points, from the first, are final (no event can change them any more);"
        " the rest are still open. Each metric asked for is an array of its own, named after it."
    )


class AggregateColumnsResult(BaseModel):
    """The answer in `format=columns`: the same figures as the default shape, as arrays."""

    from_: datetime = Field(alias="from")
    to: datetime
    granularity: str
    metrics: list[str]
    group_by: list[str]
    series: list[ColumnSeries]
    as_of: datetime | None
    watermark: datetime | None


class MeasureOut(BaseModel):
    name: str = Field(description="The measure, as the semantic model names it.")
    agg: str = Field(description="How rows are combined: sum, min or max.")
    column: str = Field(description="The rollup column it aggregates.")


class MetricInput(BaseModel):
    metric: str = Field(description="A named metric this one is built from.")
    alias: str | None = Field(None, description="The name `expr` uses for it, if not its own.")
    filter: str | None = Field(None, description="A filter on this input only, as written in the YAML.")


class NamedMetricOut(BaseModel):
    name: str = Field(description="What to pass in `metrics=` of /api/aggregate.")
    label: str
    description: str | None = None
    type: Literal["simple", "ratio", "derived"]
    filter: str | None = Field(None, description="The metric's filter as written in the YAML (MetricFlow's syntax).")
    measure: MeasureOut | None = Field(None, description="simple: the measure it aggregates.")
    numerator: MetricInput | None = Field(None, description="ratio: numerator / denominator.")
    denominator: MetricInput | None = None
    expr: str | None = Field(None, description="derived: the expression over its inputs.")
    inputs: list[MetricInput] | None = Field(None, description="derived: the metrics `expr` uses.")


class RefusedMetric(BaseModel):
    name: str
    reason: str = Field(description="What in its definition Tally cannot compute from the rollups.")


class MetricsCatalog(BaseModel):
    builtin: list[str] = Field(description="The metrics /api/aggregate always has.")
    metrics: list[NamedMetricOut] = Field(description="The named metrics defined in dbt_project/, in its order.")
    refused: list[RefusedMetric] = Field(description="Metrics defined there that Tally does not serve, and why.")
    loaded_at: datetime | None = Field(None, description="When the definitions in service were read.")
    problem: str | None = Field(
        None, description="Why the definitions on disk are not the ones in service (e.g. an invalid file)."
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
    error: str | None = Field(
        None,
        description="401 and 403 only: the RFC 6750 code (missing_token, invalid_request, invalid_token,"
        " insufficient_scope), also in the WWW-Authenticate challenge.",
    )
    scope: str | None = Field(None, description="401 and 403 only: the scope the route needs.")


class OpsPanel(BaseModel):
    id: str = Field(description="Ask for its data at /api/ops/series?panel={id}.")
    title: str
    description: str
    unit: str = Field(description="Grafana's unit id: ops (per second), s, bytes, short, percentunit.")
    kind: str = Field(description="timeseries, or stat (one current value).")


class OpsSeries(BaseModel):
    name: str
    points: list[tuple[float, float | None]] = Field(description="(epoch seconds, value); null where no value.")


class OpsPanelData(BaseModel):
    panel: OpsPanel
    minutes: int
    series: list[OpsSeries]


class OpsAlert(BaseModel):
    name: str
    severity: str
    summary: str
    since: str | None = Field(description="When it started firing (RFC 3339), as Prometheus says.")
    labels: dict[str, str]
