"""/api/filtered_events returns exactly the matching events, newest first, once each across pages."""

from __future__ import annotations

import random
import uuid
from datetime import timedelta

import pytest

from tests.e2e.conftest import iso, recent_window, wait_for


@pytest.fixture(scope="module")
def sent(api):
    rng = random.Random(5)
    # Ids of its own: a rerun within the dedup horizon would otherwise send copies, rightly dropped.
    run_id = f"f{uuid.uuid4().hex[:8]}"
    window = recent_window()
    start, _ = window
    events = []
    for i in range(400):
        e = {
            "event_id": f"{run_id}-{i:04d}",
            "event_type": f"{run_id}.{rng.choice(['order', 'refund'])}",
            # whole seconds: many events share a timestamp, so ties must be broken by event_id
            "timestamp": iso(start + timedelta(seconds=rng.randrange(120))),
            "source": rng.choice(["web", "pos"]),
            "user_id": f"u{rng.randrange(20)}",
            "value": i,
            "attributes": {"plan": rng.choice(["free", "pro"]), "items": rng.randrange(3), "gift": rng.random() < 0.3},
        }
        events.append(e)
    assert api.post("/api/events", json=events).json()["accepted"] == 400
    return run_id, window, events


def page_all(api, params, limit):
    out, cursor, pages = [], None, 0
    while True:
        p = params + [("limit", str(limit))] + ([("cursor", cursor)] if cursor else [])
        r = api.get("/api/filtered_events", params=p)
        assert r.status_code == 200, r.text
        body = r.json()
        out += body["events"]
        pages += 1
        cursor = body["next_cursor"]
        if cursor is None:
            return out, pages


def base(run_id, window, types=("order", "refund")):
    start, end = window
    return [("from", iso(start)), ("to", iso(end + timedelta(minutes=1)))] + [
        ("event_type", f"{run_id}.{t}") for t in types
    ]


def order_key(e):
    return (
        -int(e["timestamp"][11:13]) * 3600 - int(e["timestamp"][14:16]) * 60 - int(e["timestamp"][17:19]),
        e["event_id"],
    )


@pytest.mark.parametrize(
    "extra, keep",
    [
        ([], lambda e: True),
        ([("source", "pos")], lambda e: e["source"] == "pos"),
        ([("user_id", "u3")], lambda e: e["user_id"] == "u3"),
        ([("attr.plan", "pro")], lambda e: e["attributes"]["plan"] == "pro"),
        (
            [("attr.plan", "pro"), ("attr.gift", "true")],
            lambda e: e["attributes"]["plan"] == "pro" and e["attributes"]["gift"],
        ),
        ([("attr.items", "2"), ("source", "web")], lambda e: e["attributes"]["items"] == 2 and e["source"] == "web"),
    ],
)
def test_each_filter_returns_exactly_the_matching_events_across_pages(api, sent, extra, keep):
    run_id, window, events = sent
    want = sorted((e for e in events if keep(e)), key=order_key)
    params = base(run_id, window) + extra
    wait_for(lambda: len(page_all(api, params, 1000)[0]) == len(want), what="raw events to be stored")
    got, pages = page_all(api, params, 7)
    assert [e["event_id"] for e in got] == [e["event_id"] for e in want]
    assert pages == max(1, -(-len(want) // 7))
    assert got[0] == next(e for e in events if e["event_id"] == got[0]["event_id"])  # as ingested


def test_event_type_filter_selects_only_that_type(api, sent):
    run_id, window, events = sent
    got, _ = page_all(api, base(run_id, window, types=("refund",)), 1000)
    assert {e["event_type"] for e in got} == {f"{run_id}.refund"}
    assert len(got) == sum(1 for e in events if e["event_type"].endswith("refund"))
