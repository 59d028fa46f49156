"""Hostile request bodies, each posted to the real API: every one gets its status and an answer that
names the field or the reason, none gets a 5xx, what is accepted is counted, and the API stays healthy.
"""

from __future__ import annotations

import gzip
import json
import uuid
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest

from tests.e2e.conftest import iso, wait_for

RUN = f"h{uuid.uuid4().hex[:8]}"
TYPE = f"{RUN}.hostile"
JSON = {"Content-Type": "application/json"}
NDJSON = {"Content-Type": "application/x-ndjson"}
GZIP_NDJSON = {**NDJSON, "Content-Encoding": "gzip"}
# Event ids of this run that the API accepted: the last test finds every one of them stored.
ACCEPTED: list[str] = []


def event(name: str, **fields) -> dict:
    return {"event_id": f"{RUN}-{name}", "event_type": TYPE, "timestamp": iso(datetime.now(UTC)), **fields}


def line(name: str, **fields) -> bytes:
    return json.dumps(event(name, **fields)).encode()


def streamed(total: int) -> Iterator[bytes]:
    """`total` bytes of JSON whitespace as a generator: httpx sends it chunked, without Content-Length."""
    yield b"["
    chunk = b" " * 65536
    for _ in range(total // len(chunk)):
        yield chunk


def gzip_bomb(size: int) -> bytes:
    z = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    chunk = b" " * (1 << 20)
    parts = [z.compress(b"[")] + [z.compress(chunk) for _ in range(size >> 20)]
    return b"".join(parts + [z.compress(b"]"), z.flush()])


def nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


def padded_line(name: str, size: int) -> bytes:
    """A valid event whose JSON is padded with whitespace to exactly `size` bytes."""
    head = line(name)[:-1]
    return head + b" " * (size - len(head) - 1) + b"}"


@dataclass(frozen=True)
class Hostile:
    body: Callable[[int], bytes | Iterator[bytes]]  # given the body limit in bytes
    headers: dict[str, str]
    status: int
    says: str  # in the problem's detail, or in every event error's message
    errors: list[tuple[int, str | None]] = field(default_factory=list)  # (index, field) of each event error
    accepted: list[str] = field(default_factory=list)  # names of the events that must be accepted
    bug: str | None = None  # a known wrong answer, with where to fix it: the case fails until it is fixed


TABLE = {
    "over the limit with Content-Length": Hostile(lambda limit: b"[" + b" " * limit + b"]", JSON, 413, "exceeds"),
    "over the limit streamed without Content-Length": Hostile(
        lambda limit: streamed(limit + (1 << 20)), JSON, 413, "exceeds"
    ),
    "a gzip bomb (20 times the limit, decompressed)": Hostile(
        lambda limit: gzip_bomb(20 * limit), {**JSON, "Content-Encoding": "gzip"}, 413, "decompressed"
    ),
    "two gzip members, an NDJSON event each": Hostile(
        lambda _: gzip.compress(line("member-1") + b"\n") + gzip.compress(line("member-2")),
        GZIP_NDJSON,
        202,
        "",
        accepted=["member-1", "member-2"],
    ),
    "a second gzip member that is garbage": Hostile(
        lambda _: gzip.compress(line("before-garbage") + b"\n") + b"this is not gzip at all",
        GZIP_NDJSON,
        400,
        "gzip body is corrupt",
    ),
    "bytes after the last gzip member": Hostile(
        lambda _: gzip.compress(line("before-trailer")) + b"\0\0\0\0", GZIP_NDJSON, 400, "gzip body is corrupt"
    ),
    "a JSON array nested 100,000 deep": Hostile(lambda _: nested(100_000), JSON, 400, "nested too deeply"),
    "an NDJSON line nested 100,000 deep beside a valid one": Hostile(
        lambda _: nested(100_000) + b"\n" + line("beside-nested"),
        NDJSON,
        202,
        "Expected `object`, got `array`",
        errors=[(0, None)],
        accepted=["beside-nested"],
    ),
    "invalid UTF-8 in a JSON body": Hostile(
        lambda _: line("utf8").replace(f"{RUN}-utf8".encode(), b"\xff\xfe"), JSON, 400, "not valid UTF-8"
    ),
    "invalid UTF-8 in an NDJSON line": Hostile(
        lambda _: line("utf8").replace(f"{RUN}-utf8".encode(), b"\xc3\x28"),
        NDJSON,
        422,
        "not valid UTF-8",
        errors=[(0, None)],
    ),
    # json.dumps writes these as escapes: \ud800 and \u0000.
    "a lone surrogate escape inside a string": Hostile(
        lambda _: line("surrogate", source="a\ud800 and more"), JSON, 400, "surrogate"
    ),
    "a lone surrogate escape ending the body's last string": Hostile(
        lambda _: line("surrogate", source="\ud800"),
        JSON,
        400,
        "low surrogate",
    ),
    "a NUL escape in source": Hostile(
        lambda _: line("nul", source="a\0b"), JSON, 422, "control characters", errors=[(0, "source")]
    ),
    "a 10 MiB NDJSON line: one valid event padded with whitespace": Hostile(
        lambda limit: padded_line("padded", limit), NDJSON, 202, "", accepted=["padded"]
    ),
    "a 10 MiB NDJSON line: a 10 MiB event_id": Hostile(
        lambda limit: line("x" * (limit - 200)), NDJSON, 422, "length <= 128", errors=[(0, "event_id")]
    ),
    "text/plain": Hostile(lambda _: line("text"), {"Content-Type": "text/plain"}, 415, "'text/plain'"),
    "application/xml": Hostile(lambda _: b"<event/>", {"Content-Type": "application/xml"}, 415, "'application/xml'"),
    "multipart/form-data": Hostile(
        lambda _: b"--b\r\nContent-Disposition: form-data; name=e\r\n\r\n{}\r\n--b--\r\n",
        {"Content-Type": "multipart/form-data; boundary=b"},
        415,
        "'multipart/form-data'",
    ),
    "an empty body": Hostile(lambda _: b"", JSON, 400, "the body is empty"),
    "null": Hostile(lambda _: b"null", JSON, 400, "must be a JSON object or a JSON array"),
    "a number": Hostile(lambda _: b"42", JSON, 400, "must be a JSON object or a JSON array"),
    "a string": Hostile(lambda _: b'"event"', JSON, 400, "must be a JSON object or a JSON array"),
    "[]": Hostile(lambda _: b"[]", JSON, 400, "holds no events"),
    "[1,2]": Hostile(lambda _: b"[1,2]", JSON, 422, "Expected `object`, got `int`", errors=[(0, None), (1, None)]),
    "a value whose sum with another could overflow float64": Hostile(
        lambda _: line("huge", value=1.7976931348623157e308), JSON, 422, "<= 1e+289", errors=[(0, "value")]
    ),
    "a timestamp before 1970": Hostile(
        lambda _: line("1969", timestamp="1969-12-31T23:59:59Z"), JSON, 422, "1970", errors=[(0, "timestamp")]
    ),
    "a timestamp far in the future": Hostile(
        lambda _: line("3000", timestamp="3000-01-01T00:00:00Z"), JSON, 422, "too far ahead", errors=[(0, "timestamp")]
    ),
}


CASES = [
    pytest.param(case, id=name, marks=[pytest.mark.xfail(strict=True, reason=case.bug)] if case.bug else [])
    for name, case in TABLE.items()
]


@pytest.mark.parametrize("case", CASES)
def test_a_hostile_body_gets_its_status_and_the_reason(api, stack, case):
    r = api.post("/api/events", content=case.body(stack.max_body_bytes), headers=case.headers)
    assert r.status_code == case.status, r.text[:500]
    body = r.json()
    if r.status_code in (202, 422):
        assert [(e["index"], e["field"]) for e in body["errors"]] == case.errors
        assert all(case.says in e["message"] for e in body["errors"]), body["errors"]
        assert body["accepted"] == len(case.accepted)
        ACCEPTED.extend(f"{RUN}-{name}" for name in case.accepted)
    else:
        assert r.headers["content-type"] == "application/problem+json"
        assert body["status"] == case.status and case.says in body["detail"], body


def test_the_gzip_bomb_is_small_on_the_wire(stack):
    assert len(gzip_bomb(20 * stack.max_body_bytes)) < stack.max_body_bytes // 10


def test_100_000_tiny_events_in_one_body_are_accepted_and_counted(api, stack):
    kind = f"{RUN}.tiny"
    now = iso(datetime.now(UTC))
    events = [{"event_id": f"{RUN}{i}", "event_type": kind, "timestamp": now} for i in range(100_000)]
    body = json.dumps(events, separators=(",", ":")).encode()
    assert len(body) <= stack.max_body_bytes
    r = api.post("/api/events", content=body, headers=JSON)
    assert r.status_code == 202 and r.json()["accepted"] == 100_000, r.text[:500]
    hour = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    params = {"event_type": kind, "from": iso(hour - timedelta(hours=1)), "to": iso(hour + timedelta(hours=2))}

    def counted() -> int:
        return sum(
            p["count"] or 0 for s in api.get("/api/aggregate", params=params).json()["series"] for p in s["points"]
        )

    wait_for(lambda: counted() == 100_000, 120, "100,000 tiny events counted")


def test_duplicate_keys_keep_the_last_value_in_storage_and_in_aggregates(api):
    """msgspec keeps the last of a repeated key; the rollups and the raw store must agree with it, for a
    JSON body (re-encoded at ingest) and an NDJSON line (sent to Kafka as it came)."""
    kind = f"{RUN}.dup"
    text = (
        '{{"event_id":"{id}","event_type":"{kind}","timestamp":"{ts}",'
        '"source":"first","value":1,"source":"second","value":2}}'
    )
    ts = iso(datetime.now(UTC).replace(microsecond=0))
    for name, headers in (("json", JSON), ("ndjson", NDJSON)):
        r = api.post("/api/events", content=text.format(id=f"{RUN}-{name}", kind=kind, ts=ts), headers=headers)
        assert r.status_code == 202 and r.json()["accepted"] == 1, r.text
    day = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    window = {"event_type": kind, "from": iso(day - timedelta(days=1)), "to": iso(day + timedelta(days=1))}

    def stored() -> list[dict]:
        return api.get("/api/filtered_events", params=window).json()["events"]

    wait_for(lambda: len(stored()) == 2, 60, "both events stored")
    assert sorted((e["event_id"], e["source"], e["value"]) for e in stored()) == [
        (f"{RUN}-json", "second", 2.0),
        (f"{RUN}-ndjson", "second", 2.0),
    ]
    params = {**window, "group_by": "source", "metrics": "count,sum", "granularity": "1d"}

    def groups() -> dict:
        series = api.get("/api/aggregate", params=params).json()["series"]
        return {
            s["group"]["source"]: (sum(p["count"] for p in s["points"]), sum(p["sum"] for p in s["points"]))
            for s in series
        }

    wait_for(lambda: groups() == {"second": (2, 4.0)}, 60, "the last values counted")


def test_after_the_table_the_api_is_healthy_and_nothing_accepted_is_lost(api):
    assert api.get("/healthz").status_code == 200
    normal = event("normal", source="web", value=1.5)
    r = api.post("/api/events", json=normal)
    assert r.status_code == 202 and r.json() == {"accepted": 1, "rejected": 0, "errors": []}
    ids = {*ACCEPTED, normal["event_id"]}
    day = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    window = {"event_type": TYPE, "from": iso(day - timedelta(days=1)), "to": iso(day + timedelta(days=1))}

    def stored() -> set[str]:
        events = api.get("/api/filtered_events", params={**window, "limit": 1000}).json()["events"]
        return {e["event_id"] for e in events}

    def counted() -> int:
        series = api.get("/api/aggregate", params={**window, "granularity": "1d"}).json()["series"]
        return sum(p["count"] for s in series for p in s["points"])

    wait_for(lambda: stored() == ids, 60, f"the {len(ids)} accepted events stored")
    wait_for(lambda: counted() == len(ids), 60, f"the {len(ids)} accepted events counted")
