"""GET /api/aggregate: counts, sums, min/max/avg, unique users and the named metrics analysts define
(tally.semantic) per time bucket, from rollups."""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Annotated, Literal

import msgspec
from fastapi import APIRouter, Query, Response

from tally.api import rollout
from tally.api.contract import (
    EVENT_TYPES_SCHEMA,
    EXAMPLE_FROM,
    EXAMPLE_TO,
    FILTER_LIMIT,
    SOURCES_SCHEMA,
    problem_response,
)
from tally.api.deps import FinalDaysDep, HasHllDep, LegacyStoreDep, NamedMetricsDep, PgPoolDep, SettingsDep
from tally.api.models import AggregateColumnsResult, AggregateResult
from tally.api.params import comma_list, event_types, sources, time_range
from tally.api.problems import ParamError, TooCostly
from tally.legacy.store import LegacyStore
from tally.legacy.store import final_before as legacy_final_before
from tally.semantic.plan import plan
from tally.storage import aggregates, layouts
from tally.storage.aggregates import TooManyPoints

router = APIRouter(tags=["aggregates"])
log = logging.getLogger("tally.api")
_json = msgspec.json.Encoder()


@router.get(
    "/api/aggregate",
    response_model=AggregateResult | AggregateColumnsResult,
    summary="Aggregates over a time range",
    responses={
        200: {
            "description": "The aggregates, per group and time bucket.",
            "headers": {
                "X-Answered-By": {
                    "description": "The system that answered: `tally`, or `legacy` during a staged rollout"
                    " (TALLY_LEGACY_READ_SHARE).",
                    "schema": {"type": "string", "enum": ["tally", "legacy"]},
                }
            },
        },
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
    legacy: LegacyStoreDep,
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
    format: Annotated[  # noqa: A002 - the parameter's name in the API
        Literal["rows", "columns"],
        Query(
            description="`rows` (default): a list of point objects per series. `columns`: per series one"
            " array of bucket starts `t` (Unix seconds), one array per metric in the order of `metrics`,"
            " and `final`, how many points from the first are final; the same numbers in about a"
            " quarter of the bytes, for long ranges and charts.",
        ),
    ] = "rows",
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
    system = rollout.choose(settings, q) if legacy is not None else "tally"
    how = layouts.layout(format, q.metrics)
    lateness = timedelta(seconds=settings.allowed_lateness_s)
    t0 = time.perf_counter()
    if system == "legacy":
        try:
            series = [await _legacy_series(legacy, q, settings, how)]
            state = aggregates.StreamState(None, None, None)
        except TooManyPoints:
            raise
        except Exception as e:  # noqa: BLE001 - the legacy side failing costs no client its answer
            rollout.FALLBACKS.inc()
            rollout.breaker.failed()
            log.warning("the legacy store failed, Tally answers (and for %.0f s): %s", rollout.BREAK_S, e)
            system = "tally"
    if system == "tally":
        async with pg.connection() as conn:
            state = await aggregates.stream_state(conn, settings.events_topic, settings.kafka_partitions, lateness)
            series = await final_days.series_parts(
                conn,
                q,
                has_hll,
                state.final_before,
                state.revision,
                settings.max_points,
                how,
            )
    rollout.ANSWERS.labels(system).inc()
    rollout.SECONDS.labels(system).observe(time.perf_counter() - t0)
    if settings.legacy_shadow and legacy is not None and rollout.legacy_can_answer(q):
        _shadow(q, pg, has_hll, final_days, settings, legacy)
    head = _json.encode(
        {"from": start, "to": end, "granularity": granularity, "metrics": q.metrics, "group_by": q.group_by}
    )
    tail = _json.encode({"as_of": state.as_of, "watermark": state.watermark})
    # One join of every piece: encoding around msgspec.Raw, or joining the series first, would copy
    # the megabytes of series again (each copy about a millisecond of a 30-day answer here).
    body = b"".join((head[:-1], b',"series":', *series, b",", tail[1:]))
    return Response(body, media_type="application/json", headers={rollout.HEADER: system})


async def _legacy_series(
    legacy: LegacyStore, q: aggregates.AggregateQuery, settings, how: layouts.Layout = layouts.Rows()
) -> bytes:
    final_before = legacy_final_before(datetime.now(UTC), timedelta(seconds=settings.allowed_lateness_s))
    return layouts.encode_series(how, await legacy.aggregate(q, final_before, settings.max_points))


def _shadow(q, pg, has_hll, final_days, settings, legacy) -> None:
    """Ask both systems again, after the answer, and count whether they agree."""
    lateness = timedelta(seconds=settings.allowed_lateness_s)
    ours = replace(q, metrics=["count", "sum", "late_count"])
    theirs = replace(q, metrics=["count", "sum"])

    async def tally() -> tuple[bytes, datetime | None]:
        async with pg.connection() as conn:
            state = await aggregates.stream_state(conn, settings.events_topic, settings.kafka_partitions, lateness)
            out = await final_days.series_json(
                conn, ours, has_hll, state.final_before, state.revision, settings.max_points
            )
        return out, state.final_before

    legacy_horizon = legacy_final_before(datetime.now(UTC), lateness)
    rollout.shadow(
        tally,
        lambda: _legacy_series(legacy, theirs, settings),
        aggregates.GRANULARITIES[q.granularity],
        q.end,
        legacy_horizon,
    )
