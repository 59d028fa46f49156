"""The API starts and ingests while PostgreSQL and Cassandra are down; their queries answer 503
with Retry-After, readiness names them, liveness stays up."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from fastapi.testclient import TestClient

from tally.api.app import create_app
from tally.auth.devissuer import bearer
from tally.settings import Settings
from tally.storage import rollup_store
from tests.e2e.conftest import iso


def test_with_both_stores_down_the_api_starts_ingests_and_answers_their_queries_503(stack):
    # Ports nothing listens on: as if PostgreSQL and Cassandra were down when the API started.
    down = Settings(**{**stack.model_dump(), "pg_port": 1, "cassandra_port": 2})
    now = iso(datetime.now(UTC))
    with TestClient(create_app(down), headers=bearer(down)) as client:
        event = {"event_id": f"down-{uuid.uuid4().hex}", "event_type": "stores_down.ok", "timestamp": now}
        accepted = client.post("/api/events", json=[event])
        window = {"from": "2026-11-01T00:00:00Z", "to": "2026-11-02T00:00:00Z", "event_type": "stores_down.ok"}
        aggregate = client.get("/api/aggregate", params=window)
        filtered = client.get("/api/filtered_events", params=window)
        live, ready = client.get("/healthz"), client.get("/readyz")
    assert accepted.status_code == 202 and accepted.json()["accepted"] == 1
    for r, store in ((aggregate, "PostgreSQL"), (filtered, "Cassandra")):
        assert r.status_code == 503 and r.headers["Retry-After"] == "5", r.text
        assert r.json()["title"] == f"{store} unavailable"
        # Words for a person, not the driver's error maps, hosts and ports.
        detail = r.json()["detail"]
        assert detail.startswith(f"{store} ") and detail.endswith("; nothing was lost, ask again in 5 s"), detail
        assert not any(raw in detail for raw in ("errors=", "127.0.0.1", "port", "Error")), detail
    assert live.status_code == 200
    checks = ready.json()["checks"]
    assert ready.status_code == 503 and checks["kafka"] == "ok"
    assert checks["postgres"].startswith("error") and checks["cassandra"].startswith("error")


def test_a_statement_over_the_query_timeout_is_cancelled_and_answered_422_with_a_hint(stack):
    # Rows enough that the statement cannot finish within 1 ms whatever else the database holds
    # (on a fresh stack an empty range answered in time).
    et = f"slowq{uuid.uuid4().hex[:8]}"
    with rollup_store.connect(stack) as conn:
        conn.execute(
            "insert into rollup_1h (bucket, event_type, source, kafka_partition, event_count, value_count,"
            " value_sum, users, final) select h, %s, 's' || s, 0, 1, 0, 0, ''::bytea, true"
            " from generate_series(timestamptz '2026-01-01Z', timestamptz '2026-10-31Z', interval '1 hour') h,"
            " generate_series(1, 20) s",
            (et,),
        )
    try:
        slow = Settings(**{**stack.model_dump(), "query_timeout_s": 0.001})
        with TestClient(create_app(slow), headers=bearer(slow)) as client:
            params = {"from": "2026-01-01T00:00:00Z", "to": "2026-11-01T00:00:00Z", "event_type": et}
            r = client.get("/api/aggregate", params={**params, "group_by": "source"})
    finally:
        with rollup_store.connect(stack) as conn:
            conn.execute("delete from rollup_1h where event_type = %s", (et,))
    assert r.status_code == 422, r.text
    assert "time limit" in r.json()["detail"] and "coarser granularity" in r.json()["detail"]
