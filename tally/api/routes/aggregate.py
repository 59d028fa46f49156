"""GET /api/aggregate: counts, sums, min/max/avg and unique users per time bucket, from rollups."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated

import msgspec
from fastapi import APIRouter, Query, Response

from tally.api.deps import FinalDaysDep, HasHllDep, PgPoolDep, SettingsDep
from tally.api.models import AggregateResult
from tally.api.problems import ParamError
from tally.storage import aggregates

router = APIRouter(tags=["aggregates"])
_json = msgspec.json.Encoder()


def aware(name: str, value: datetime) -> datetime:
    if value.tzinfo is None:
        raise ParamError(name, "must be RFC 3339 with a UTC offset, e.g. 2026-11-26T10:00:00Z")
    return value


def comma_list(name: str, value: str | None, allowed: tuple[str, ...], default: list[str]) -> list[str]:
    if value is None or not value.strip():
        return default
    items = [v.strip() for v in value.split(",") if v.strip()]
    unknown = [v for v in items if v not in allowed]
    if unknown:
        raise ParamError(name, f"unknown value {unknown[0]!r}; choose from {', '.join(allowed)}")
    return list(dict.fromkeys(items))


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
    start, end = aware("from", start), aware("to", end)
    if end <= start:
        raise ParamError("to", "must be after from")
    if granularity is None:
        granularity = aggregates.default_granularity(start, end)
    elif granularity not in aggregates.GRANULARITIES:
        raise ParamError("granularity", f"must be one of {', '.join(aggregates.GRANULARITIES)}")
    if (end - start) / aggregates.GRANULARITIES[granularity] > 100 * aggregates.MAX_BUCKETS:
        raise ParamError("granularity", f"{granularity} over this range gives too many buckets; use a coarser one")
    q = aggregates.AggregateQuery(
        start=start,
        end=end,
        granularity=granularity,
        metrics=comma_list("metrics", metrics, aggregates.METRICS, ["count"]),
        group_by=comma_list("group_by", group_by, aggregates.GROUPS, []),
        event_types=event_type,
        sources=source,
    )
    async with pg.connection() as conn:
        lateness = timedelta(seconds=settings.allowed_lateness_s)
        state = await aggregates.stream_state(conn, settings.events_topic, settings.kafka_partitions, lateness)
        series = await final_days.series_json(conn, q, has_hll, state.final_before, state.revision)
    head = _json.encode(
        {"from": start, "to": end, "granularity": granularity, "metrics": q.metrics, "group_by": q.group_by}
    )
    tail = _json.encode({"as_of": state.as_of, "watermark": state.watermark})
    # Spliced rather than encoded around msgspec.Raw: that would copy the megabytes of series again.
    body = b"".join((head[:-1], b',"series":', series, b",", tail[1:]))
    return Response(body, media_type="application/json")
