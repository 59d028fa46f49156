"""Catch-up: how fast the dataflow drains a backlog into durable, exact rollups, by cardinality.

With the dataflow stopped, the workload (benchmarks.workload) goes into Kafka through the API; the
dataflow is started, and the clock runs from the moment it answers (start-up excluded, as in the
Flink figures it is compared with) until every partition has committed the topic's end offset,
that is until every event is in PostgreSQL and Cassandra. Then every (minute, event_type, source)
cell is read back through /api/aggregate and compared with what was sent.

    python -m benchmarks.catchup --keys 32 10000 --events 5000000
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid
from collections import Counter
from datetime import datetime, timedelta

import httpx

from benchmarks.common import report
from benchmarks.components import Sampler
from benchmarks.workload import Workload
from tally.auth.devissuer import bearer
from tally.loadgen import post_bodies
from tally.settings import Settings, get_settings
from tally.stack import runner
from tally.storage import rollup_store, stream_progress


def wait_caught_up(settings: Settings, timeout_s: float, poll_s: float = 0.25) -> float | None:
    """Seconds until every partition has committed the topic's end; None on timeout."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout_s:
        if stream_progress.read(settings).caught_up:
            return time.monotonic() - t0
        time.sleep(poll_s)
    return None


def settle(settings: Settings, timeout_s: float) -> float:
    """Wait until no minute is open any more (a previous run's cells, which would otherwise close
    during this run's drain and be counted as its work): seconds waited."""
    t0 = time.monotonic()
    with rollup_store.connect(settings, autocommit=True) as conn:
        while time.monotonic() - t0 < timeout_s:
            if not conn.execute("select exists (select from rollup_1m where not final)").fetchone()[0]:
                break
            time.sleep(5)
    return time.monotonic() - t0


def counted(client: httpx.Client, prefix: str, minutes: list[str]) -> Counter:
    """Events counted per (minute, event_type, source) of the workload's event types, a minute at a
    time (a minute at 100,000 keys is 100,000 points, inside the API's answer limit)."""
    out: Counter = Counter()
    for minute in minutes:
        start = datetime.fromisoformat(minute + ":00+00:00")
        params = {
            "from": start.isoformat(),
            "to": (start + timedelta(minutes=1)).isoformat(),
            "granularity": "1m",
            "group_by": "event_type,source",
        }
        r = client.get("/api/aggregate", params=params)
        r.raise_for_status()
        for s in r.json()["series"]:
            event_type = s["group"]["event_type"]
            if event_type.startswith(prefix + "."):
                out[(minute, event_type, s["group"]["source"])] += sum(p["count"] for p in s["points"])
    return out


def run(
    settings: Settings,
    keys: int,
    events: int,
    rate: float = 120_000,
    drain_timeout_s: float = 1800,
    settle_s: float = 600,
) -> dict:
    """`settle_s`: how long to wait for earlier minutes to close first (they close lateness + idle
    lag, ~6 minutes, after their events); 0 for a smoke run on a stack other tests use."""
    prefix = f"cu{uuid.uuid4().hex[:6]}"
    base = f"http://127.0.0.1:{settings.api_port}"
    if wait_caught_up(settings, 120) is None:
        raise RuntimeError("the dataflow did not catch up with what was already in Kafka")
    settled_s = settle(settings, settle_s) if settle_s else 0.0
    runner.down(settings, ["dataflow"])
    work = Workload(prefix, events, keys, rate)
    bodies = work.bodies()
    stats = asyncio.run(
        post_bodies(f"{base}/api/events", lambda: next(bodies, None), 1000, None, 86400, 8, gzipped=False)
    )
    if stats.accepted != events:
        raise RuntimeError(f"the API accepted {stats.accepted} of {events} events: {stats.statuses}")
    before = stream_progress.read(settings)
    t0 = time.monotonic()
    runner.up(settings, ["dataflow"])
    started_s = time.monotonic() - t0
    sampler = Sampler()
    drain_s = wait_caught_up(settings, drain_timeout_s)
    usage = sampler.stop()
    if drain_s is None:
        raise RuntimeError(f"not caught up after {drain_timeout_s} s")
    with httpx.Client(base_url=base, timeout=120, headers=bearer(settings)) as client:
        cells = counted(client, prefix, work.minutes())
    wrong = sum(1 for k in work.truth.keys() | cells.keys() if work.truth[k] != cells[k])
    return {
        "keys_per_minute": keys,
        "events": events,
        "kafka_messages": before.lag,
        "cells": len(work.truth),
        "settled_s": round(settled_s),
        "dataflow_start_s": round(started_s, 1),
        "drain_s": round(drain_s, 1),
        "events_per_s": round(events / drain_s),
        "exact": wrong == 0,
        "cells_wrong": wrong,
        **{k: v for k, v in usage.items() if k.startswith(("dataflow", "cassandra", "postgres", "kafka", "api"))},
    }


def sweep(settings: Settings, keys: list[int], events: int, settle_s: float = 600) -> dict:
    """The figures of each cardinality, flat, for `tally bench`."""
    out = {}
    for k in keys:
        figures = run(settings, k, events, settle_s=settle_s)
        out |= {f"catchup_{k}_{name}": v for name, v in figures.items() if name != "keys_per_minute"}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--keys", type=int, nargs="+", default=[32, 1_000, 10_000, 100_000])
    ap.add_argument("--events", type=int, default=5_000_000)
    ap.add_argument("--rate", type=float, default=120_000, help="events per second of event time")
    args = ap.parse_args()
    settings = get_settings()
    for keys in args.keys:
        report("catchup", run(settings, keys, args.events, args.rate))


if __name__ == "__main__":
    main()
