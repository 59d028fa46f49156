import pytest

from tally.events.schema import BodyError, decode_batch, decode_ndjson, encode_event

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
