"""Duplicates, shuffled and late events through the whole pipeline, checked against what was sent."""

from __future__ import annotations

import random
import re
from collections import Counter
from datetime import UTC, datetime, timedelta

import httpx

from tally.storage import raw_events, raw_reader, rollup_store
from tally.storage.corrections import fold_late
from tests.e2e.conftest import iso, minute_cells, recent_window, wait_for


def dataflow_counter(settings, name: str) -> float:
    """A counter summed over every dataflow process (each serves its own /metrics)."""
    total = 0.0
    for i in range(settings.dataflow_processes):
        text = httpx.get(f"http://127.0.0.1:{settings.dataflow_metrics_port + i}/metrics", timeout=5).text
        total += sum(float(v) for v in re.findall(rf"^{name}\{{[^}}]*\}} (\S+)$", text, re.M))
    return total


def make(run_id: str, rng: random.Random, n: int, start: datetime, span_s: float) -> list[dict]:
    return [
        {
            "event_id": f"{run_id}-{i}",
            "event_type": f"{run_id}.{rng.choice(['a', 'b'])}",
            "timestamp": iso(start + timedelta(seconds=rng.uniform(0, span_s))),
            "source": rng.choice(["web", "ios"]),
            "user_id": f"u{rng.randrange(30)}",
        }
        for i in range(n)
    ]


def cells(events: list[dict]) -> Counter:
    return Counter((e["timestamp"][:16], e["event_type"], e["source"]) for e in events)


def answered(api, run_id: str, start: datetime, end: datetime, metric: str = "count") -> Counter:
    params = [("from", iso(start)), ("to", iso(end)), ("granularity", "1m"), ("metrics", metric)]
    params += [("event_type", f"{run_id}.a"), ("event_type", f"{run_id}.b"), ("group_by", "event_type,source")]
    return minute_cells(api.get("/api/aggregate", params=params).json(), metric)


def post(api, events: list[dict]) -> None:
    r = api.post("/api/events", json=events)
    assert r.status_code == 202 and r.json()["accepted"] == len(events), r.text


def test_five_percent_duplicates_are_counted_and_stored_once(api, stack, run_id):
    rng = random.Random(11)
    start, end = recent_window()
    events = make(run_id, rng, 2000, start, 119.9)
    dups = rng.sample(events, 100)
    suppressed_before = dataflow_counter(stack, "tally_dataflow_duplicates_total")
    # 40 copies inside the same requests as their originals, 30 in a later request.
    first, second = events[:1000] + dups[:40], events[1000:] + dups[40:70]
    rng.shuffle(first)
    post(api, first)
    post(api, second)
    truth = cells(events)
    wait_for(lambda: answered(api, run_id, start, end + timedelta(minutes=1)) == truth, what="the distinct counts")
    # The last 30 copies come after their originals were counted and their ids committed to the
    # dedup store: a client retrying long after its first attempt was acknowledged.
    post(api, dups[70:])
    wait_for(
        lambda: dataflow_counter(stack, "tally_dataflow_duplicates_total") - suppressed_before >= 100,
        what="all 100 copies to be suppressed",
    )
    assert dataflow_counter(stack, "tally_dataflow_duplicates_total") - suppressed_before == 100
    assert answered(api, run_id, start, end + timedelta(minutes=1)) == truth
    stored = []
    cursor = None
    while True:
        params = [("from", iso(start)), ("to", iso(end + timedelta(minutes=1))), ("limit", "500")]
        params += [("event_type", f"{run_id}.a"), ("event_type", f"{run_id}.b")]
        body = api.get("/api/filtered_events", params=params + ([("cursor", cursor)] if cursor else [])).json()
        stored += [e["event_id"] for e in body["events"]]
        if not (cursor := body["next_cursor"]):
            break
    assert sorted(stored) == sorted(e["event_id"] for e in events)


def test_shuffled_within_lateness_none_late_and_one_percent_beyond_all_ledgered(api, run_id):
    rng = random.Random(12)
    start, end = recent_window()
    # Every partition's watermark must be near now, so that "beyond lateness" is unambiguous.
    wait_for(
        lambda: (
            (w := api.get("/api/aggregate", params={"from": iso(start), "to": iso(end)}).json()["watermark"])
            and datetime.fromisoformat(w) > datetime.now(UTC) - timedelta(minutes=3)
        ),
        what="watermarks near now",
    )
    on_time = make(run_id, rng, 1980, start, 119.9)
    rng.shuffle(on_time)  # out of order, but all within the allowed lateness (300 s) of each other
    old_start = start - timedelta(minutes=30)
    late = make(f"{run_id}", rng, 20, old_start, 119.9)
    for i, e in enumerate(late):
        e["event_id"] = f"{run_id}-late-{i}"
    batch = on_time + late
    rng.shuffle(batch)
    post(api, batch[:1000])
    post(api, batch[1000:])
    wait_for(lambda: answered(api, run_id, start, end + timedelta(minutes=1)) == cells(on_time), what="on-time counts")
    old_end = old_start + timedelta(minutes=3)
    wait_for(
        lambda: answered(api, run_id, old_start, old_end, "late_count") == cells(late),
        what="every late event in the ledger, in its own minute",
    )
    assert not answered(api, run_id, start, end + timedelta(minutes=1), "late_count")
    assert not answered(api, run_id, old_start, old_end)  # the late ones are in no rollup


def test_late_events_are_folded_once_by_the_correction_step_and_stored_once(api, stack, run_id):
    rng = random.Random(13)
    old_start = (datetime.now(UTC) - timedelta(hours=3)).replace(minute=0, second=0, microsecond=0)
    old_end = old_start + timedelta(minutes=3)  # an hour long closed in every partition
    late = make(run_id, rng, 30, old_start, 119.9)
    suppressed_before = dataflow_counter(stack, "tally_dataflow_duplicates_total")
    post(api, late)
    wait_for(lambda: answered(api, run_id, old_start, old_end, "late_count") == cells(late), what="ledgered")
    post(api, late[:10])  # a client retry of late events: within the horizon, dedup drops it
    wait_for(
        lambda: dataflow_counter(stack, "tally_dataflow_duplicates_total") - suppressed_before >= 10,
        what="the 10 copies to be suppressed",
    )

    while fold_late(stack).rows:  # as `tally correct` does
        pass
    assert answered(api, run_id, old_start, old_end) == cells(late)  # in the rollups now, once each
    assert not answered(api, run_id, old_start, old_end, "late_count")
    with rollup_store.connect(stack) as conn:
        rows = conn.execute(
            "select count(*), count(position), count(watermark), count(*) filter (where duplicate) from late_events"
            " where event_type like %s and folded_at is not null",
            (f"{run_id}.%",),
        ).fetchone()
    assert rows == (30, 30, 30, 0)  # every row carries its stream position and watermark; none was a copy
    cluster = raw_events.cluster(stack)
    reader = raw_reader.RawEventReader(cluster.connect(stack.cassandra_keyspace), stack.kafka_partitions)
    stored = Counter(e.event_id for et in ("a", "b") for e in reader.hour(f"{run_id}.{et}", raw_events.us(old_start)))
    cluster.shutdown()
    assert stored == Counter(e["event_id"] for e in late)
