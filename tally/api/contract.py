"""What the OpenAPI contract says that FastAPI cannot see for itself: the ingest body the route reads
raw, errors sent as application/problem+json, and the limits the parameter checks apply. The docs
show it, and the contract fuzz (tests/e2e/test_contract_fuzz.py) holds every answer to it."""

from __future__ import annotations

from typing import Any

import msgspec

from tally.api.models import Problem
from tally.api.params import MAX_FILTER_VALUES
from tally.events.schema import EVENT_TYPE_PATTERN, Event

_json = msgspec.json.Encoder()

# The README's day, as the query routes' example range: the docs' "Try it out" starts from it, and so
# do the contract fuzz's first requests (schemathesis tries the examples before it generates).
EXAMPLE_FROM, EXAMPLE_TO = "2026-11-26T00:00:00Z", "2026-11-27T00:00:00Z"
# What tally.api.params checks in the filters, declared in their schema as well: the docs show it, and
# generated requests (the contract fuzz) get past the parameter checks to the stores. The limit of
# MAX_FILTER_VALUES is on distinct values (repeats are dropped first), which maxItems cannot say.
EVENT_TYPES_SCHEMA = {"items": {"type": "string", "pattern": EVENT_TYPE_PATTERN}}
SOURCES_SCHEMA = {"items": {"type": "string", "minLength": 1, "maxLength": 64}}
FILTER_LIMIT = f"at most {MAX_FILTER_VALUES} distinct values"


def problem_response(description: str, retry_after: bool = False) -> dict[str, Any]:
    """A `responses` entry for a Problem. FastAPI files a response model under the route's own media
    type (application/json), so the schema is given here, inline, under the type actually sent."""
    out: dict[str, Any] = {
        "description": description,
        "content": {"application/problem+json": {"schema": inline_schema(Problem.model_json_schema())}},
    }
    if retry_after:
        out["headers"] = {
            "Retry-After": {"description": "Seconds to wait before retrying.", "schema": {"type": "integer"}}
        }
    return out


def inline_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """`schema` with its local `$defs` references replaced by the definitions they name: a schema
    placed inside an operation has no root of its own for `#/$defs/...` to point into."""
    defs = schema.get("$defs", {})

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            if "$ref" in node:
                return resolve(defs[node["$ref"].rsplit("/", 1)[-1]])
            return {k: resolve(v) for k, v in node.items() if k != "$defs"}
        if isinstance(node, list):
            return [resolve(v) for v in node]
        return node

    return resolve(schema)


# The route reads the raw body itself (no pydantic model), so FastAPI cannot see it: the request body
# is declared here, from the msgspec schema the body is decoded with.
EVENT_SCHEMA = inline_schema(msgspec.json.schema(Event))
# The README's examples: the docs show them, and the contract fuzz sends them before it generates.
EXAMPLE_EVENTS = [
    {
        "event_id": "o-1",
        "event_type": "purchase",
        "timestamp": "2026-11-26T10:00:05Z",
        "source": "web",
        "user_id": "u7",
        "value": 42.5,
        "attributes": {"plan": "pro"},
    },
    {"event_id": "o-2", "event_type": "purchase", "timestamp": "2026-11-26T10:00:09+01:00", "value": 3},
]
INGEST_BODY = {
    "required": True,
    "description": "Gzip-compressed too with `Content-Encoding: gzip` (any number of members). Events that"
    " are invalid are rejected one by one, with their index; the rest are accepted.",
    "content": {
        "application/json": {
            "schema": {"anyOf": [EVENT_SCHEMA, {"type": "array", "items": EVENT_SCHEMA, "minItems": 1}]},
            "examples": {
                "one event": {"value": EXAMPLE_EVENTS[0]},
                "an array of events": {"value": EXAMPLE_EVENTS},
            },
        },
        "application/x-ndjson": {
            "schema": {
                "type": "string",
                "description": "One Event as JSON per line (also as application/ndjson, application/jsonl"
                " or application/x-jsonlines).",
            },
            "example": "\n".join(_json.encode(e).decode() for e in EXAMPLE_EVENTS),
        },
    },
}
