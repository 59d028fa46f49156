"""An event a store refuses for its content is dead-lettered with the reason; the rest of its flush,
and everything after it, is counted exactly: the pipeline never stalls on it."""

from __future__ import annotations

import uuid
from collections import Counter

from tally.storage import raw_events, raw_reader, rollup_store
from tests.e2e.conftest import iso, minute_cells, recent_window, wait_for
from tests.topics import read_topic


def test_events_postgresql_refuses_are_dead_lettered_and_the_rest_counted_exactly(api, stack):
    # Ingest refuses everything the stores are known to refuse, so a refusal is made here: a check
    # constraint PostgreSQL enforces on the rollup rows of one source, as a store rule would.
    run = f"r{uuid.uuid4().hex[:8]}"
    refused_source = f"{run}-refused"
    constraint = f"refuse_{run}"
    start, end = recent_window()
    body = []
    for i in range(400):
        source = refused_source if i % 100 == 7 else "web"
        body.append({"event_id": f"{run}-{i}", "event_type": f"{run}.order", "timestamp": iso(start), "source": source})
    with rollup_store.connect(stack, autocommit=True) as conn:
        for table in ("rollup_1m", "rollup_1h"):
            conn.execute(
                f"alter table {table} add constraint {constraint} check (source <> '{refused_source}') not valid"
            )
        try:
            assert api.post("/api/events", json=body).json()["accepted"] == 400
            marker = run.encode()
            letters = read_topic(stack, stack.dlq_topic, lambda ms: sum(marker in m.value() for m in ms) >= 4, 90)
            mine = [m for m in letters if marker in m.value()]
            after = [{**e, "event_id": f"{e['event_id']}-after", "source": "web"} for e in body[:100]]
            assert api.post("/api/events", json=after).json()["accepted"] == 100
        finally:
            for table in ("rollup_1m", "rollup_1h"):
                conn.execute(f"alter table {table} drop constraint if exists {constraint}")
        recorded = conn.execute(
            "select count(*) from refused_positions where reason like %s", (f"%{constraint}%",)
        ).fetchone()[0]

    assert sorted(m.value().decode().split('"event_id":"')[1].split('"')[0] for m in mine) == sorted(
        e["event_id"] for e in body if e["source"] == refused_source
    )
    for m in mine:
        headers = dict(m.headers())
        assert (
            headers["reason"].decode().startswith("refused by PostgreSQL:") and constraint in headers["reason"].decode()
        )
        assert {"partition", "offset", "line"} <= headers.keys()
    assert recorded == 4

    params = [("from", iso(start)), ("to", iso(end)), ("granularity", "1m"), ("metrics", "count")]
    params += [("group_by", "event_type,source"), ("event_type", f"{run}.order")]
    minute = iso(start)[:16]
    want = Counter({(minute, f"{run}.order", "web"): 396 + 100})
    wait_for(lambda: minute_cells(api.get("/api/aggregate", params=params).json()) == want, 90, "exact counts")
    # Raw storage holds every counted event exactly once, and none of the refused ones.
    cluster = raw_events.cluster(stack)
    try:
        reader = raw_reader.RawEventReader(cluster.connect(stack.cassandra_keyspace), stack.kafka_partitions)
        hour = raw_events.us(start.replace(minute=0))
        stored = Counter(e.event_id for e in reader.hour(f"{run}.order", hour))
    finally:
        cluster.shutdown()
    assert stored == Counter(e["event_id"] for e in body + after if e["source"] != refused_source)
