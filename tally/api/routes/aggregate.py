"""GET /api/aggregate: counts, sums, min/max/avg, unique users and the named metrics analysts define
(tally.semantic) per time bucket, from rollups."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated

import msgspec
from fastapi import APIRouter, Query, Response

from tally.api.contract import (
    EVENT_TYPES_SCHEMA,
    EXAMPLE_FROM,
    EXAMPLE_TO,
    FILTER_LIMIT,
    SOURCES_SCHEMA,
    problem_response,
)
from tally.api.deps import FinalDaysDep, HasHllDep, NamedMetricsDep, PgPoolDep, SettingsDep
from tally.api.models import AggregateResult
from tally.api.params import comma_list, event_types, sources, time_range
from tally.api.problems import ParamError, TooCostly
from tally.semantic.plan import plan
from tally.storage import aggregates

router = APIRouter(tags=["aggregates"])
_json = msgspec.json.Encoder()


@router.get(
    "/api/aggregate",
    response_model=AggregateResult,
    summary="Aggregates over a time range",
    responses={
        422: problem_response("A parameter is invalid, or the query would cost too much (with what to change)."),
        503: problem_response("PostgreSQL does not answer; retry after Retry-After.", True),
    },
)
async def get_aggregate(
    pg: PgPoolDep,
    has_hll: HasHllDep,
    final_days: FinalDaysDep,
    settings: SettingsDep,
    named_metrics: NamedMetricsDep,
    start: Annotated[
        datetime,
        Query(alias="from", description="Range start, RFC 3339 with offset (inclusive).", examples=[EXAMPLE_FROM]),
    ],
    end: Annotated[
        datetime, Query(alias="to", description="Range end, RFC 3339 with offset (exclusive).", examples=[EXAMPLE_TO])
    ],
    event_type: Annotated[
        list[str],
        Query(
            description=f"Only these event types (repeatable, {FILTER_LIMIT}).",
            examples=[["purchase"]],
            json_schema_extra=EVENT_TYPES_SCHEMA,
        ),
    ] = [],  # noqa: B006
    source: Annotated[
        list[str],
        Query(
            description=f"Only these sources (repeatable, {FILTER_LIMIT}).",
            examples=[["web"]],
            json_schema_extra=SOURCES_SCHEMA,
        ),
    ] = [],  # noqa: B006
    granularity: Annotated[
        str | None,
        Query(
            description="1m, 5m, 15m, 1h or 1d; default: finest with <= ~1,500 buckets.",
            examples=["1h"],
            json_schema_extra={"enum": list(aggregates.GRANULARITIES)},
        ),
    ] = None,
    metrics: Annotated[
        str | None,
        Query(
            description="Comma list of count, sum, min, max, avg, unique_users, late_count and the named"
            " metrics of GET /api/metrics (e.g. purchases, conversion), mixed freely.",
            examples=["count,sum,unique_users"],
        ),
    ] = None,
    group_by: Annotated[str | None, Query(description="Comma list of event_type, source.", examples=["source"])] = None,
) -> Response:
    start, end = time_range(start, end)
    if granularity is None:
        granularity = aggregates.default_granularity(start, end)
    elif granularity not in aggregates.GRANULARITIES:
        raise ParamError("granularity", f"must be one of {', '.join(aggregates.GRANULARITIES)}")
    buckets = (end - start) / aggregates.GRANULARITIES[granularity]
    if buckets > settings.max_points:
        raise TooCostly(f"{granularity} over this range gives {buckets:,.0f} buckets (at most {settings.max_points:,})")
    catalog = named_metrics.current()
    chosen = comma_list("metrics", metrics, aggregates.METRICS + catalog.names, ["count"])
    named = [m for m in chosen if m in catalog.metrics]
    q = aggregates.AggregateQuery(
        start=start,
        end=end,
        granularity=granularity,
        metrics=chosen,
        group_by=comma_list("group_by", group_by, aggregates.GROUPS, []),
        event_types=event_types(event_type),
        sources=sources(source),
        named=plan(catalog, named) if named else None,
    )
    async with pg.connection() as conn:
        lateness = timedelta(seconds=settings.allowed_lateness_s)
        state = await aggregates.stream_state(conn, settings.events_topic, settings.kafka_partitions, lateness)
        series = await final_days.series_json(conn, q, has_hll, state.final_before, state.revision, settings.max_points)
    head = _json.encode(
        {"from": start, "to": end, "granularity": granularity, "metrics": q.metrics, "group_by": q.group_by}
    )
    tail = _json.encode({"as_of": state.as_of, "watermark": state.watermark})
    # Spliced rather than encoded around msgspec.Raw: that would copy the megabytes of series again.
    body = b"".join((head[:-1], b',"series":', series, b",", tail[1:]))
    return Response(body, media_type="application/json")
