"""Dual write and the legacy comparison, on a second API of the running stack.

The same ingest load (1,000-event NDJSON bodies, as fast as the API takes them, each run once the
dataflow has drained the previous one) through an API started beside the stack's own with: no
legacy side; a legacy PostgreSQL table (database `legacy` of the stack's PostgreSQL), flat out and
at a pace it keeps up with; a legacy HTTP endpoint where nothing listens (its buffer capped at half
the events over all API workers, so that it fills). Each run reports the events/s accepted and,
from the API's /metrics, what was forwarded, dropped and still buffered, which must add up to what
was accepted. After each PostgreSQL run, the legacy table and Tally are compared over its events
once the dataflow has counted them (tally.legacy.compare), with the time each side's query took.
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid
from datetime import UTC, datetime, timedelta

import httpx
from prometheus_client.parser import text_string_to_metric_families

from benchmarks.bodies import BodyFactory
from benchmarks.common import pct, report
from tally.auth.devissuer import bearer
from tally.legacy import compare
from tally.loadgen import post_bodies
from tally.settings import Settings, get_settings
from tally.stack import runner
from tally.storage import rollup_store, stream_progress


def legacy_dsn(s: Settings) -> str:
    with rollup_store.connect(s, autocommit=True) as conn:
        if not conn.execute("select 1 from pg_database where datname = 'legacy'").fetchone():
            conn.execute("create database legacy")
    return s.pg_dsn.replace(f"dbname={s.pg_database}", "dbname=legacy")


def side_api(s: Settings, **legacy) -> Settings:
    side = s.model_copy(update={"state_dir": s.state_dir / "bench-migration", "api_port": s.api_port + 200, **legacy})
    results = runner.up(side, ["api"])
    if not all(r.ok for r in results):
        raise RuntimeError("; ".join(r.message for r in results))
    return side


def wait_drained(s: Settings, timeout_s: float = 300) -> None:
    """Until the dataflow has read every event sent so far: runs must not share the machine with the
    previous run's drain."""
    deadline = time.monotonic() + timeout_s
    while not stream_progress.read(s).caught_up and time.monotonic() < deadline:
        time.sleep(1)


def legacy_counters(port: int) -> dict[str, float]:
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    out = {"forwarded": 0.0, "dropped": 0.0, "buffered": 0.0}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "tally_legacy_forwarded_events_total":
                out["forwarded"] += sample.value
            elif sample.name == "tally_legacy_dropped_events_total":
                out["dropped"] += sample.value
            elif sample.name == "tally_legacy_buffered_events":
                out["buffered"] += sample.value
    return out


def one_run(
    s: Settings, name: str, events: int, concurrency: int, settle_s: float = 30, rate: float | None = None, **legacy
) -> tuple[dict, BodyFactory, float]:
    wait_drained(s)
    side = side_api(s, **legacy)
    factory = BodyFactory(f"mig{uuid.uuid4().hex[:6]}", 1000, shapes=16, event_types=40)
    bodies = iter(range(events // 1000))

    def next_body() -> bytes | None:
        return factory.next() if next(bodies, None) is not None else None

    started = time.time()
    try:
        url = f"http://127.0.0.1:{side.api_port}/api/events"
        send = post_bodies(url, next_body, 1000, rate, 3600, concurrency, gzipped=False, auth=bearer(side))
        stats = asyncio.run(send)
        # Whatever the legacy side can take, it has taken within a few seconds of the last request.
        deadline = time.monotonic() + settle_s
        while (c := legacy_counters(side.api_port))["buffered"] and time.monotonic() < deadline:
            time.sleep(0.5)
    finally:
        runner.down(side, ["api"])
    figures = {
        f"dualwrite_{name}_accepted": stats.accepted,
        f"dualwrite_{name}_events_per_s": round(stats.accepted / stats.seconds),
        f"dualwrite_{name}_request_p99_ms": round(pct(stats.latencies, 99) * 1000, 1),
    }
    if legacy.get("legacy_sink", "off") != "off":
        figures |= {
            f"dualwrite_{name}_forwarded": int(c["forwarded"]),
            f"dualwrite_{name}_dropped": int(c["dropped"]),
            f"dualwrite_{name}_buffered_at_end": int(c["buffered"]),
            f"dualwrite_{name}_all_accounted": c["forwarded"] + c["dropped"] + c["buffered"] == stats.accepted,
        }
    return figures, factory, started


def run(
    s: Settings, events: int = 500_000, concurrency: int = 8, drain_timeout_s: float = 180, paced: float = 10_000
) -> dict:
    figures: dict = {}
    figures |= one_run(s, "off", events, concurrency)[0]
    dsn = legacy_dsn(s)
    # Flat out, the legacy table shares the two cores with the whole stack and falls behind; at a pace
    # it keeps up with, nothing is dropped. Each is then compared with Tally.
    for name, rate in (("postgres", None), ("postgres_paced", paced)):
        table = f"bench_{uuid.uuid4().hex[:6]}"
        pg, factory, started = one_run(
            s, name, events, concurrency, rate=rate, legacy_sink="postgres", legacy_dsn=dsn, legacy_table=table
        )
        figures |= pg
        compared = s.model_copy(update={"legacy_dsn": dsn, "legacy_table": table})
        figures |= comparison(compared, name, factory, started, pg[f"dualwrite_{name}_accepted"], drain_timeout_s)
    # Nothing listens on port 9: every batch fails at once. The buffer is at most half the events, so
    # the run shows drops whatever its size (each API worker has its own buffer).
    down = {
        "legacy_sink": "http",
        "legacy_url": "http://127.0.0.1:9/",
        "legacy_buffer_events": events // (2 * s.api_workers),
    }
    figures |= one_run(s, "down", events, concurrency, settle_s=0, **down)[0]
    return figures


def comparison(
    s: Settings, name: str, factory: BodyFactory, started: float, accepted: int, drain_timeout_s: float
) -> dict:
    """Legacy vs Tally over one run's events, once the dataflow has counted them all."""
    start = datetime.fromtimestamp(started, UTC).replace(minute=0, second=0, microsecond=0)
    end = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    prefix = f"{factory.prefix}."
    deadline = time.monotonic() + drain_timeout_s
    while True:
        c = compare.compare(s, start, end)
        ours = [r for r in c.rows if r.event_type.startswith(prefix)]
        tally = sum(r.tally_count for r in ours)
        if tally >= accepted or time.monotonic() > deadline:
            break
        time.sleep(2)
    return {
        f"compare_{name}_event_types": len(ours),
        f"compare_{name}_legacy_events": sum(r.legacy_count for r in ours),
        f"compare_{name}_tally_events": tally,
        f"compare_{name}_differing_event_types": sum(1 for r in ours if r.difference > c.tolerance),
        f"compare_{name}_legacy_query_ms": round(c.legacy_s * 1000, 1),
        f"compare_{name}_tally_query_ms": round(c.tally_s * 1000, 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--events", type=int, default=500_000, help="events per run")
    ap.add_argument("--concurrency", type=int, default=8)
    args = ap.parse_args()
    report("migration", run(get_settings(), args.events, args.concurrency))


if __name__ == "__main__":
    main()
