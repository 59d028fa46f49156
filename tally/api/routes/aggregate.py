"""GET /api/aggregate: counts, sums, min/max/avg and unique users per time bucket, from rollups."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated

import msgspec
from fastapi import APIRouter, Query, Response

from tally.api.deps import FinalDaysDep, HasHllDep, PgPoolDep, SettingsDep
from tally.api.models import AggregateResult
from tally.api.params import comma_list, event_types, sources, time_range
from tally.api.problems import ParamError, TooCostly
from tally.storage import aggregates

router = APIRouter(tags=["aggregates"])
_json = msgspec.json.Encoder()


@router.get("/api/aggregate", response_model=AggregateResult, summary="Aggregates over a time range")
async def get_aggregate(
    pg: PgPoolDep,
    has_hll: HasHllDep,
    final_days: FinalDaysDep,
    settings: SettingsDep,
    start: Annotated[datetime, Query(alias="from", description="Range start, RFC 3339 with offset (inclusive).")],
    end: Annotated[datetime, Query(alias="to", description="Range end, RFC 3339 with offset (exclusive).")],
    event_type: Annotated[list[str], Query(description="Only these event types (repeatable).")] = [],  # noqa: B006
    source: Annotated[list[str], Query(description="Only these sources (repeatable).")] = [],  # noqa: B006
    granularity: Annotated[
        str | None, Query(description="1m, 5m, 15m, 1h or 1d; default: finest with <= ~1,500 buckets.")
    ] = None,
    metrics: Annotated[
        str | None, Query(description="Comma list of count, sum, min, max, avg, unique_users, late_count.")
    ] = None,
    group_by: Annotated[str | None, Query(description="Comma list of event_type, source.")] = None,
) -> Response:
    start, end = time_range(start, end)
    if granularity is None:
        granularity = aggregates.default_granularity(start, end)
    elif granularity not in aggregates.GRANULARITIES:
        raise ParamError("granularity", f"must be one of {', '.join(aggregates.GRANULARITIES)}")
    buckets = (end - start) / aggregates.GRANULARITIES[granularity]
    if buckets > settings.max_points:
        raise TooCostly(f"{granularity} over this range gives {buckets:,.0f} buckets (at most {settings.max_points:,})")
    q = aggregates.AggregateQuery(
        start=start,
        end=end,
        granularity=granularity,
        metrics=comma_list("metrics", metrics, aggregates.METRICS, ["count"]),
        group_by=comma_list("group_by", group_by, aggregates.GROUPS, []),
        event_types=event_types(event_type),
        sources=sources(source),
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
