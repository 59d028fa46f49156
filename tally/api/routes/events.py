"""POST /api/events: validate a batch, produce the valid events to Kafka, answer once Kafka has them."""

from __future__ import annotations

import time
from collections import Counter
from datetime import UTC, datetime, timedelta

import msgspec
from fastapi import APIRouter, Request, Response

from tally.api import metrics, ratelimit
from tally.api.body import TooLarge, UnsupportedMediaType, is_ndjson, read_body
from tally.api.contract import INGEST_BODY, problem_response
from tally.api.deps import DualWriterDep, ProducerDep, SettingsDep
from tally.api.models import IngestResult
from tally.api.problems import problem
from tally.events.decode import decode_batch, decode_messages, ndjson_lines
from tally.events.schema import BodyError, encode_event
from tally.producer import ProduceError

router = APIRouter(tags=["events"])
_json = msgspec.json.Encoder()

# NDJSON lines longer than this are re-encoded rather than sent as they came. Any valid event encodes
# to under 43 KB (32 attributes of 64 + 256 characters, 4 bytes at most each), so a line can only be
# longer by whitespace or escapes, up to the body limit: as it came it would exceed Kafka's message
# limit (tally.producer.MAX_MESSAGE_BYTES) and the broker's refusal would answer a false 503.
MAX_LINE_AS_SENT = 64 * 1024


@router.post(
    "/api/events",
    status_code=202,
    response_model=IngestResult,
    responses={
        400: problem_response("The body cannot be read (no events, not JSON/NDJSON, not UTF-8, bad gzip)."),
        413: problem_response("The body exceeds the limit (received or decompressed)."),
        415: problem_response("The Content-Type is neither JSON nor NDJSON."),
        422: {"description": "No event in the body is valid.", "model": IngestResult},
        503: problem_response("Kafka did not acknowledge the events in time; retry after Retry-After.", True),
    },
    summary="Ingest one event, a JSON array of events, or NDJSON",
    openapi_extra={"requestBody": INGEST_BODY},
)
async def post_events(
    request: Request, settings: SettingsDep, producer: ProducerDep, dual_writer: DualWriterDep
) -> Response:
    try:
        ndjson = is_ndjson(request)
        body = await read_body(request, settings.max_body_bytes)
        metrics.BODY_BYTES.observe(len(body))
        # Far-future event times would hold their buckets open and escape dedup: refused here.
        not_after = datetime.now(UTC) + timedelta(seconds=settings.max_ahead_s)
        if ndjson:
            lines = ndjson_lines(body)
            events, errors = decode_messages(lines, not_after)
        else:
            events, errors = decode_batch(body, not_after)
    except UnsupportedMediaType as e:
        return problem(415, "Unsupported media type", str(e))
    except TooLarge:
        metrics.BODY_BYTES.observe(settings.max_body_bytes + 1)
        return problem(
            413, "Body too large", f"the body exceeds {settings.max_body_bytes} bytes (received or decompressed)"
        )
    except BodyError as e:
        return problem(400, "Unreadable body", str(e))
    result = {"accepted": 0, "rejected": len(errors), "errors": [e.as_dict() for e in errors]}
    for field, n in Counter(metrics.rejected_field(e.field) for e in errors).items():
        metrics.REJECTED.labels(field).inc(n)
    if not events:
        return Response(_json.encode(result), status_code=422, media_type="application/json")
    await ratelimit.events(request, len(events))  # a 429 past the client's limit: nothing produced
    if ndjson:
        # A valid NDJSON line is exactly one event's JSON: send it as it came, no re-encoding.
        bad = {e.index for e in errors}
        values = [line for i, line in enumerate(lines) if i not in bad] if bad else lines
        if max(map(len, values)) > MAX_LINE_AS_SENT:
            values = [v if len(v) <= MAX_LINE_AS_SENT else encode_event(e) for v, e in zip(values, events, strict=True)]
    else:
        values = [encode_event(e) for e in events]
    t0 = time.perf_counter()
    try:
        await producer.send_events(values, [e.event_id for e in events])
    except ProduceError as e:
        metrics.UNAVAILABLE.labels(e.cause).inc(len(events))
        return problem(
            503,
            "Kafka unavailable",
            f"the request was not accepted; send it again (events of it that did reach Kafka are counted once): {e}",
            headers={"Retry-After": str(settings.retry_after_s)},
        )
    metrics.PRODUCE_SECONDS.observe(time.perf_counter() - t0)
    result["accepted"] = len(events)
    metrics.ACCEPTED.inc(len(events))
    if dual_writer is not None:
        # Only what Kafka took: the legacy side must not get events the client will send again.
        dual_writer.offer(values)
    return Response(_json.encode(result), status_code=202, media_type="application/json")
