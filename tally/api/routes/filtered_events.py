"""GET /api/filtered_events: raw events as ingested, newest first, with a cursor to page through."""

from __future__ import annotations

import time
from datetime import datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from starlette.concurrency import run_in_threadpool

from tally.api.contract import EVENT_TYPES_SCHEMA, EXAMPLE_FROM, EXAMPLE_TO, FILTER_LIMIT, problem_response
from tally.api.deps import RawStoreDep, SettingsDep
from tally.api.models import FilteredEvents
from tally.api.params import event_types, time_range
from tally.api.problems import ParamError
from tally.storage.raw_reader import Cursor, RawQuery

router = APIRouter(tags=["events"])
MAX_RANGE = timedelta(days=31)


@router.get(
    "/api/filtered_events",
    response_model=FilteredEvents,
    summary="Raw events matching filters",
    responses={
        422: problem_response("A parameter is invalid; `errors` names it."),
        503: problem_response("Cassandra does not answer; retry after Retry-After.", True),
    },
    description="Filter further with `attr.<key>=<value>` (repeatable; all must match). A page may hold fewer"
    " than `limit` events when the scan's time budget ran out first: the list ends only where `next_cursor` is"
    " null.",
)
async def get_filtered_events(
    request: Request,
    raw: RawStoreDep,
    settings: SettingsDep,
    event_type: Annotated[
        list[str],
        Query(
            description=f"Event types to return (required, repeatable, {FILTER_LIMIT}).",
            examples=[["purchase"]],
            json_schema_extra={**EVENT_TYPES_SCHEMA, "minItems": 1},
        ),
    ],
    start: Annotated[
        datetime, Query(alias="from", description="RFC 3339 with offset (inclusive).", examples=[EXAMPLE_FROM])
    ],
    end: Annotated[
        datetime,
        Query(
            alias="to",
            description="RFC 3339 with offset (exclusive); at most 31 days after from.",
            examples=[EXAMPLE_TO],
        ),
    ],
    source: Annotated[str | None, Query(examples=["web"])] = None,
    user_id: Annotated[str | None, Query(examples=["u7"])] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: str | None = None,
) -> Response:
    start, end = time_range(start, end, MAX_RANGE)
    types = event_types(event_type)
    attrs = {}
    for key, value in request.query_params.multi_items():
        if key.startswith("attr."):
            name = key[len("attr.") :]
            if not name:
                raise ParamError(key, "name the attribute: attr.<key>=<value>")
            if name in attrs and attrs[name] != value:
                raise ParamError(key, "given twice with different values; no event can match both")
            attrs[name] = value
    try:
        after = Cursor.decode(cursor) if cursor else None
    except Exception as e:
        raise ParamError("cursor", "not a cursor this API returned") from e
    q = RawQuery(types, start, end, source, user_id, attrs, limit, after)
    deadline = time.monotonic() + settings.scan_budget_s
    bodies, next_cursor = await run_in_threadpool(lambda: raw.reader().page(q, deadline))
    nxt = f'"{next_cursor.encode()}"'.encode() if next_cursor else b"null"
    payload = b'{"events":[' + b",".join(bodies) + b'],"next_cursor":' + nxt + b"}"
    return Response(payload, media_type="application/json")
