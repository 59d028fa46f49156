import json
from datetime import UTC, datetime

import pytest

from tally.events.decode import decode_batch, decode_messages, ndjson_lines
from tally.events.schema import BodyError, encode_event


def decode_ndjson(body: bytes, not_after=None):
    """What the API does with an NDJSON body."""
    return decode_messages(ndjson_lines(body), not_after)


GOOD = b'{"event_id":"e1","event_type":"click","timestamp":"2026-11-26T10:00:00+02:00"}'


def err(body, ndjson=False):
    events, errors = (decode_ndjson if ndjson else decode_batch)(body)
    assert not events
    assert len(errors) == 1
    return errors[0]


def test_one_object_an_array_and_ndjson_decode_to_the_same_event():
    (one,), _ = decode_batch(GOOD)
    (arr,), _ = decode_batch(b"[" + GOOD + b"]")
    (nd,), _ = decode_ndjson(b"\n" + GOOD + b"\n\n")
    assert one == arr == nd
    assert one.source == "unknown" and one.timestamp.utcoffset().total_seconds() == 7200


@pytest.mark.parametrize(
    "patch, field",
    [
        (b'"event_id":""', "event_id"),
        (b'"event_id":"' + b"x" * 129 + b'"', "event_id"),
        (b'"event_type":"Click!"', "event_type"),
        (b'"timestamp":"2026-11-26T10:00:00"', "timestamp"),
        (b'"timestamp":"yesterday"', "timestamp"),
        (b'"value":1e999', "value"),
        (b'"value":"3"', "value"),
        (b'"source":"' + b"s" * 65 + b'"', "source"),
        (b'"attributes":{"k":[1]}', "attributes"),
        (b'"attributes":{"k":"' + b"v" * 257 + b'"}', "attributes"),
        (b'"nope":1', "nope"),
    ],
)
def test_each_bad_field_is_named(patch, field):
    key = patch.split(b":")[0]
    body = GOOD[:-1] + b"," + patch + b"}" if key not in GOOD else _replace(GOOD, key, patch)
    e = err(body)
    assert e.index == 0 and e.field == field, e


def _replace(body, key, patch):
    start = body.index(key)
    end = body.index(b'"', body.index(b':"', start) + 2) + 1
    return body[:start] + patch + body[end:]


def test_missing_required_field_is_named():
    assert err(b'{"event_id":"a","timestamp":"2026-11-26T10:00:00Z"}').field == "event_type"


def test_too_many_attributes_is_rejected():
    attrs = ",".join(f'"k{i}":{i}' for i in range(33)).encode()
    assert err(GOOD[:-1] + b',"attributes":{' + attrs + b"}}").field == "attributes"


def test_valid_events_in_a_partly_invalid_array_are_kept_with_indexes_of_the_bad_ones():
    bad = b'{"event_id":"e2","event_type":"BAD","timestamp":"2026-11-26T10:00:00Z"}'
    events, errors = decode_batch(b"[" + b",".join([GOOD, bad, GOOD, bad]) + b"]")
    assert len(events) == 2
    assert [(e.index, e.field) for e in errors] == [(1, "event_type"), (3, "event_type")]


def test_a_malformed_ndjson_line_rejects_that_line_only():
    events, errors = decode_ndjson(GOOD + b"\n{not json\n" + GOOD)
    assert len(events) == 2 and errors[0].index == 1 and "JSON" in errors[0].message


@pytest.mark.parametrize("body", [b"", b"  ", b"{not json", b"42", b'"text"', b"[1,"])
def test_unreadable_bodies_raise_body_error(body):
    with pytest.raises(BodyError):
        decode_batch(body)


def test_encoding_keeps_the_event_as_ingested():
    (event,), _ = decode_batch(GOOD[:-1] + b',"attributes":{"plan":"pro","n":2,"ok":true}}')
    again, _ = decode_batch(encode_event(event))
    assert again == [event]
    assert b'"timestamp":"2026-11-26T10:00:00+02:00"' in encode_event(event)


def _event(**fields) -> bytes:
    base = {"event_id": "e1", "event_type": "click", "timestamp": "2026-11-26T10:00:00Z"}
    return json.dumps({**base, **fields}).encode()


@pytest.mark.parametrize(
    "fields, field",
    [
        ({"source": "a\u0000b"}, "source"),
        ({"event_id": "id\u001f"}, "event_id"),
        ({"user_id": "u\n1"}, "user_id"),
        ({"attributes": {"k\t": "v"}}, "attributes"),
        ({"attributes": {"k": "line\r\nbreak"}}, "attributes"),
    ],
)
def test_control_characters_in_any_text_field_are_refused_naming_it(fields, field):
    for body, ndjson in ((_event(**fields), False), (_event(**fields), True), (b"[" + _event(**fields) + b"]", False)):
        assert err(body, ndjson).field == field


def test_an_escaped_backslash_before_n_is_text_not_a_newline():
    (event,), errors = decode_batch(_event(source="C:\\new\\tab", user_id="\\u0000"))
    assert errors == [] and event.source == "C:\\new\\tab" and event.user_id == "\\u0000"


def test_control_characters_reject_only_their_own_event_with_its_index():
    lines = [_event(event_id="ok1"), _event(event_id="bad", source="x\u0000"), _event(event_id="BAD", event_type="X")]
    events, errors = decode_ndjson(b"\n".join([*lines, _event(event_id="ok2")]))
    assert [e.event_id for e in events] == ["ok1", "ok2"]
    assert [(e.index, e.field) for e in errors] == [(1, "source"), (2, "event_type")]


@pytest.mark.parametrize(
    "raw",
    [
        b'"a\\ud800b"',  # a lone high surrogate
        b'"\\udc00"',  # a lone low surrogate
        b'"\xff"',  # not UTF-8
        b'"\xed\xa0\x80"',  # a surrogate encoded as UTF-8
    ],
)
def test_text_that_is_not_unicode_is_refused_not_raised(raw):
    body = _event()[:-1] + b',"source":' + raw + b"}"
    with pytest.raises(BodyError):
        decode_batch(body)
    e = err(body, ndjson=True)
    assert e.index == 0 and e.field is None


def test_deeply_nested_json_is_a_body_error_not_a_crash():
    deep = b"[" * 100_000 + b"]" * 100_000
    with pytest.raises(BodyError, match="nested too deeply"):
        decode_batch(b"[" + deep + b"]")
    events, errors = decode_ndjson(deep + b"\n" + _event())
    assert len(events) == 1 and [e.index for e in errors] == [0]


@pytest.mark.parametrize("ts", ["1969-12-31T23:59:59Z", "0001-01-01T00:00:00+05:00", "1970-01-01T04:59:59+05:00"])
def test_event_times_before_the_epoch_are_refused(ts):
    e = err(_event(timestamp=ts))
    assert e.field == "timestamp" and "1970" in e.message


def test_event_times_past_not_after_are_refused_and_earlier_ones_kept():
    limit = datetime(2026, 11, 26, 10, 5, tzinfo=UTC)
    body = b"\n".join([_event(timestamp="2026-11-26T10:05:00Z"), _event(timestamp="2026-11-26T10:05:00.000001Z")])
    events, errors = decode_ndjson(body, not_after=limit)
    assert len(events) == 1 and [(e.index, e.field) for e in errors] == [(1, "timestamp")]
    assert "ahead" in errors[0].message
    events, errors = decode_batch(_event(timestamp="9999-12-31T23:59:59-05:00"), limit)
    assert events == [] and errors[0].field == "timestamp"
