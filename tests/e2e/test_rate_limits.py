"""Per-client rate limits on an API of the test stack started with small limits: past its limit a
client gets 429 with Retry-After and nothing of its request is taken, other clients go on, and the
refusals are counted in the API's metrics."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient

from tally.api import metrics
from tally.api.app import create_app
from tally.auth import devissuer
from tests.e2e.conftest import iso, recent_window, wait_for


def as_client(settings, subject: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {devissuer.mint(settings, devissuer.SCOPES, 600, subject)}"}


@pytest.fixture(scope="module")
def limited(stack):
    settings = stack.model_copy(update={"rate_limit_events": "300/minute", "rate_limit_queries": "5/second"})
    with TestClient(create_app(settings)) as client:
        client.settings = settings
        yield client


def test_past_its_query_limit_a_client_gets_429_with_retry_after_and_others_go_on(limited):
    ana, bo = as_client(limited.settings, "ana"), as_client(limited.settings, "bo")
    refused_before = metrics.RATE_LIMITED.labels("queries")._value.get()
    statuses = [limited.get("/api/metrics", headers=ana).status_code for _ in range(8)]
    assert statuses[:5] == [200] * 5 and 429 in statuses[5:], statuses
    r = limited.get("/api/metrics", headers=ana)
    assert r.status_code == 429 and r.headers["content-type"] == "application/problem+json"
    assert 1 <= int(r.headers["retry-after"]) <= 2 and "queries" in r.json()["detail"]
    assert limited.get("/api/metrics", headers=bo).status_code == 200  # another client's own window
    time.sleep(int(r.headers["retry-after"]) + 1)
    assert limited.get("/api/metrics", headers=ana).status_code == 200  # room again, as told
    assert metrics.RATE_LIMITED.labels("queries")._value.get() > refused_before


def test_an_ingest_past_the_limit_is_refused_whole_and_what_was_taken_is_counted_once(limited, api, run_id):
    start, _ = recent_window()
    carla = as_client(limited.settings, "carla")

    def batch(tag: str, n: int) -> list[dict]:
        return [
            {"event_id": f"{run_id}-{tag}-{i}", "event_type": f"{run_id}.rl", "timestamp": iso(start)} for i in range(n)
        ]

    assert limited.post("/api/events", json=batch("a", 200), headers=carla).status_code == 202
    r = limited.post("/api/events", json=batch("b", 200), headers=carla)  # 400 > 300 a minute
    assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1 and "events" in r.json()["detail"]
    assert limited.post("/api/events", json=batch("c", 50), headers=carla).status_code == 202  # 250 fits
    r = limited.post("/api/events", json=batch("d", 301), headers=as_client(limited.settings, "dan"))
    assert r.status_code == 429 and "smaller bodies" in r.json()["detail"]  # can never fit one window

    params = {"from": iso(start), "to": iso(start + timedelta(minutes=1)), "event_type": f"{run_id}.rl"}

    def counted() -> int:
        return sum(p["count"] for s in api.get("/api/aggregate", params=params).json()["series"] for p in s["points"])

    wait_for(lambda: counted() == 250, what="the 250 taken events to be counted")
    time.sleep(3)
    assert counted() == 250  # none of the refused bodies' events went through
