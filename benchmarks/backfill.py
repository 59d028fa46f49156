"""Backfill: history loaded into durable storage (raw events in Cassandra, minute and hour rows in
PostgreSQL, the ledger), exact per (minute, event_type, source), at the 10 B/day density over
10,000 (event_type, source) keys a minute, from NDJSON files, by 1 and by 2 processes (each its own
share of the files, as `tally backfill` runs on separate inputs); then once more with the live
stream's freshness probed beside it under 5,000 events/s of live traffic.

The history is two days old, so every hour of it is closed in the stream and goes the direct way.

    python -m benchmarks.backfill --events 2000000 --keys 10000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx

from benchmarks.catchup import counted
from benchmarks.common import background_load, pct, report
from benchmarks.components import Sampler
from benchmarks.freshness import probe
from benchmarks.workload import Workload
from tally.auth.devissuer import bearer
from tally.settings import Settings, get_settings

DENSITY = 10_000_000_000 / 86_400  # events per second of event time at 10 B a day

_CHILD = """
import json, sys
from tally.backfill import sources
from tally.backfill.importer import Backfill
from tally.settings import get_settings
job = Backfill(get_settings(), sys.argv[1], "benchmark")
progress = job.load(sources.rows_of([__import__("pathlib").Path(p) for p in sys.argv[2:]]))
job.close()
print(json.dumps({**progress.counts.__dict__, "seconds": progress.seconds}))
"""


def history(directory: Path, events: int, keys: int, parts: int) -> tuple[Workload, list[list[Path]]]:
    """The workload's bodies as NDJSON files, dealt round-robin into `parts` shares of 4 files."""
    start = (datetime.now(UTC) - timedelta(days=2)).replace(minute=0, second=0, microsecond=0).timestamp()
    work = Workload(f"bf{uuid.uuid4().hex[:6]}", events, keys, DENSITY, start=start)
    files = [directory / f"{work.prefix}-{i}.ndjson" for i in range(4 * parts)]
    handles = [f.open("wb") for f in files]
    for i, body in enumerate(work.bodies()):
        handles[i % len(handles)].write(body + b"\n")
    for h in handles:
        h.close()
    return work, [files[p::parts] for p in range(parts)]


def load(shares: list[list[Path]], run: str) -> tuple[float, list[dict]]:
    """Each share by a process of its own, side by side: wall seconds and each one's counts."""
    t0 = time.monotonic()
    children = [
        subprocess.Popen([sys.executable, "-c", _CHILD, f"bench:{run}:{i}", *map(str, share)], stdout=subprocess.PIPE)
        for i, share in enumerate(shares)
    ]
    outs = [c.communicate()[0] for c in children]
    seconds = time.monotonic() - t0
    if any(c.returncode for c in children):
        raise RuntimeError("a backfill process failed")
    return seconds, [json.loads(o.splitlines()[-1]) for o in outs]


def exact(settings: Settings, work: Workload) -> bool:
    base = f"http://127.0.0.1:{settings.api_port}"
    with httpx.Client(base_url=base, timeout=120, headers=bearer(settings)) as client:
        cells = counted(client, work.prefix, work.minutes())
    return all(work.truth[k] == cells[k] for k in work.truth.keys() | cells.keys())


def one(settings: Settings, events: int, keys: int, parts: int, probe_rate: float = 0) -> dict:
    with tempfile.TemporaryDirectory(prefix="tally-backfill-") as tmp:
        work, shares = history(Path(tmp), events, keys, parts)
        latencies: list[float] = []
        done = threading.Event()
        prober = threading.Thread(target=_probe_until, args=(settings, done, latencies), daemon=True)
        sampler = Sampler()
        with background_load(settings, probe_rate) as live:
            if probe_rate:
                prober.start()
            seconds, counts = load(shares, work.prefix)
            done.set()
            if probe_rate:
                prober.join()
        usage = sampler.stop()
    stored = sum(c["stored"] for c in counts)
    out = {
        f"backfill_{parts}p_events": events,
        f"backfill_{parts}p_stored": stored,
        f"backfill_{parts}p_seconds": round(seconds, 1),
        f"backfill_{parts}p_events_per_s": round(events / seconds),
        f"backfill_{parts}p_exact": stored == events and exact(settings, work),
        **{f"backfill_{parts}p_{k}": v for k, v in usage.items() if k.startswith(("cassandra", "postgres"))},
    }
    if probe_rate:
        out |= {
            "backfill_1p_traffic_events_per_s": round(live.get("accepted", 0) / max(live.get("seconds", 0), 1e-9)),
            "backfill_1p_freshness_probes": len(latencies),
            "backfill_1p_freshness_p50_s": round(pct(latencies, 50), 3),
            "backfill_1p_freshness_p99_s": round(pct(latencies, 99), 3),
        }
    return out


def _probe_until(settings: Settings, done: threading.Event, latencies: list[float]) -> None:
    async def go() -> None:
        run = uuid.uuid4().hex[:8]
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{settings.api_port}", timeout=30, headers=bearer(settings)
        ) as client:
            i = 0
            while not done.is_set():
                latencies.append(await probe(client, run, i))
                i += 1
                await asyncio.sleep(0.25)

    asyncio.run(go())


def run(settings: Settings, events: int, keys: int, beside_live: bool = True) -> dict:
    out = one(settings, events, keys, 1)
    out |= one(settings, events, keys, 2)
    if beside_live:
        live = one(settings, events, keys, 1, probe_rate=5000)
        out |= {k.replace("backfill_1p", "backfill_beside_live"): v for k, v in live.items()}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=2_000_000)
    ap.add_argument("--keys", type=int, default=10_000)
    a = ap.parse_args()
    report("backfill", run(get_settings(), a.events, a.keys))


if __name__ == "__main__":
    main()
