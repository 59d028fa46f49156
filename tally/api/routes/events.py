"""POST /api/events: validate a batch, produce the valid events to Kafka, answer once Kafka has them."""

from __future__ import annotations

import zlib

import msgspec
from fastapi import APIRouter, Request, Response

from tally.api import metrics
from tally.api.deps import ProducerDep, SettingsDep
from tally.api.models import IngestResult
from tally.api.problems import problem
from tally.events.schema import BodyError, decode_batch, decode_messages, encode_event, ndjson_lines
from tally.producer import ProduceError

router = APIRouter(tags=["events"])
_json = msgspec.json.Encoder()


class TooLarge(Exception):
    pass


async def read_body(request: Request, limit: int) -> bytes:
    """The body, decompressed if gzip, stopping as soon as it passes `limit` (so a gzip bomb costs nothing)."""
    encoding = request.headers.get("content-encoding", "identity").lower()
    if encoding not in ("identity", "gzip"):
        raise BodyError(f"Content-Encoding {encoding!r} is not supported; use gzip or none")
    declared = request.headers.get("content-length")
    if encoding == "identity" and declared and declared.isdigit() and int(declared) > limit:
        raise TooLarge
    gunzip = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS) if encoding == "gzip" else None
    out = bytearray()
    async for chunk in request.stream():
        if gunzip is None:
            out += chunk
        else:
            try:
                out += gunzip.decompress(chunk, limit + 1 - len(out))
            except zlib.error as e:
                raise BodyError(f"the gzip body is corrupt: {e}") from e
        if len(out) > limit:
            raise TooLarge
    if gunzip is not None and not gunzip.eof:
        raise BodyError("the gzip body is truncated")
    return bytes(out)


@router.post(
    "/api/events",
    status_code=202,
    response_model=IngestResult,
    responses={
        400: {"description": "The body cannot be read (not JSON/NDJSON, bad gzip)."},
        413: {"description": "The body exceeds the limit (after decompression)."},
        422: {"description": "No event in the body is valid.", "model": IngestResult},
        503: {"description": "Kafka did not acknowledge the events in time; retry after Retry-After."},
    },
    summary="Ingest one event, a JSON array of events, or NDJSON",
)
async def post_events(request: Request, settings: SettingsDep, producer: ProducerDep) -> Response:
    try:
        body = await read_body(request, settings.max_body_bytes)
        ndjson = request.headers.get("content-type", "").split(";")[0].strip() == "application/x-ndjson"
        if ndjson:
            lines = ndjson_lines(body)
            events, errors = decode_messages(lines)
        else:
            events, errors = decode_batch(body)
    except TooLarge:
        return problem(413, "Body too large", f"the body exceeds {settings.max_body_bytes} bytes after decompression")
    except BodyError as e:
        return problem(400, "Unreadable body", str(e))
    result = {"accepted": 0, "rejected": len(errors), "errors": [e.as_dict() for e in errors]}
    metrics.REJECTED.inc(len(errors))
    if not events:
        return Response(_json.encode(result), status_code=422, media_type="application/json")
    if ndjson:
        # A valid NDJSON line is exactly one event's JSON: send it as it came, no re-encoding.
        bad = {e.index for e in errors}
        values = [line for i, line in enumerate(lines) if i not in bad] if bad else lines
    else:
        values = [encode_event(e) for e in events]
    try:
        await producer.send_events(values, [e.event_id for e in events])
    except ProduceError as e:
        metrics.UNAVAILABLE.inc(len(events))
        return problem(
            503,
            "Kafka unavailable",
            f"no event of this request was accepted: {e}",
            headers={"Retry-After": str(settings.retry_after_s)},
        )
    result["accepted"] = len(events)
    metrics.ACCEPTED.inc(len(events))
    return Response(_json.encode(result), status_code=202, media_type="application/json")
