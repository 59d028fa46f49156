"""Tally's benchmark harness: every figure of the performance targets, against a running stack.

    .venv/bin/tally bench            # the full run (about 20 minutes)
    .venv/bin/tally bench --smoke    # a few seconds per figure: proves the harness and exactness, not speed

Prints a table (figure, value, target) and writes all figures as JSON to benchmarks/results/.
"""

from __future__ import annotations

import argparse
import faulthandler
import json
import os
import platform
import signal
import subprocess
import sys
import time
from pathlib import Path

from benchmarks import (
    backfill,
    catchup,
    end_to_end,
    freshness,
    idle,
    ingest,
    kafka_ceiling,
    migration,
    named_metrics,
    queries,
    scrape_cost,
)
from benchmarks.common import RESULTS
from tally.settings import get_settings

TARGETS = {
    "ingest_events_per_s": ">= 300,000",
    "ingest_vs_kafka_tool": ">= 0.5",
    "e2e_events_per_s": ">= 115,700 (10 min, exact)",
    "e2e_exact": "True",
    "catchup_10000_events_per_s": ">= 160,000 (10,000 keys a minute, exact)",
    "freshness_p99_s": "<= 2 s",
    "aggregate_p99_ms": "<= 25 ms (30 days, 100 series, 20,000 events/s of ingest beside it)",
    "aggregate_columns_p99_ms": "<= 15 ms (the same, format=columns)",
    "filtered_page100_p99_ms": "<= 50 ms",
    "filtered_attr_source_p99_ms": "<= 50 ms",
    "replay_events_per_s_per_process": "(10 B/day density, 10 K keys/min)",
    "replay_events_per_s_2_processes": ">= 500,000 (the machine, as the dataflow runs)",
    "replay_peak_rss_mib": "<= 1024 at 1 M keys/day",
    "step_10000_us_per_event": "(to state: the aggregate step's own CPU, no stores)",
    "dedup_disk_mib_per_million_ids": "(to state; an hour at 10 B/day is 417 M ids)",
    "backfill_1p_events_per_s": ">= 250,000 (10,000 keys a minute, exact, the stream idle)",
    "backfill_beside_live_freshness_p99_s": "(to state: 5,000 events/s of live traffic beside it)",
    "dualwrite_postgres_events_per_s": "(to state, beside dualwrite_off_events_per_s: ingest never waits)",
    "dualwrite_down_all_accounted": "True (accepted = forwarded + dropped + buffered)",
}


def main() -> None:
    # SIGUSR1 prints every thread's stack to stderr: what a run that hangs is waiting on (the smoke
    # test sends it before giving up on the run).
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smoke", action="store_true", help="seconds, not minutes: for CI")
    ap.add_argument("--duration", type=float, default=600, help="end-to-end seconds")
    ap.add_argument(
        "--rate",
        type=float,
        default=120_000,
        help="end-to-end offered events/s (0: as fast as the API takes them; the backlog then grows)",
    )
    ap.add_argument("--keys", type=int, help="end-to-end: (event_type, source) keys a minute (default: the demo's)")
    ap.add_argument(
        "--catchup-keys",
        type=int,
        nargs="+",
        default=[32, 1_000, 10_000, 100_000],
        help="catch-up: the cardinality sweep, keys a minute",
    )
    ap.add_argument(
        "--only",
        nargs="*",
        help="ingest kafka e2e catchup freshness queries metrics idle scrape replay dedup step backfill dualwrite",
    )
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args()
    s = get_settings()
    smoke = args.smoke
    steps = {
        "ingest": lambda: ingest.run(s, 3 if smoke else 30),
        "kafka": lambda: kafka_ceiling.run(s, 20_000 if smoke else 3_000_000),
        "e2e": lambda: end_to_end.run(
            s,
            4 if smoke else args.duration,
            rate=args.rate or None,
            drain_timeout_s=60 if smoke else 600,
            keys=args.keys,
        ),
        "catchup": lambda: catchup.sweep(
            s, [32] if smoke else args.catchup_keys, 20_000 if smoke else 5_000_000, settle_s=0 if smoke else 600
        ),
        "freshness": lambda: freshness.run(
            s, 5 if smoke else 100, load_rate=2000 if smoke else 20_000, keys=100 if smoke else 10_000
        ),
        "queries": lambda: queries.run(
            s,
            8 if smoke else 100,
            1 if smoke else 30,
            2_000 if smoke else 100_000,
            10 if smoke else 1000,
            load_rate=1_000 if smoke else 20_000,
        ),
        "metrics": lambda: named_metrics.run(s, None, 3 if smoke else 25, 3 if smoke else 40),
        "idle": lambda: idle.run(s, 10 if smoke else 300),
        "scrape": lambda: scrape_cost.run(s, 10 if smoke else 300),
        "backfill": lambda: backfill.run(
            s, 20_000 if smoke else 2_000_000, 100 if smoke else 10_000, beside_live=not smoke
        ),
        "dualwrite": lambda: migration.run(
            s, 20_000 if smoke else 500_000, drain_timeout_s=60 if smoke else 180, paced=10_000
        ),
        "replay": None,  # run in a child process below
        "dedup": None,  # likewise
        "step": None,  # likewise
    }
    figures: dict = {
        "machine": platform.node(),
        "cpus": os.cpu_count(),
        "smoke": smoke,
        "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"bench-{time.strftime('%Y%m%dT%H%M%S')}{'-smoke' if smoke else ''}.json"
    failed = []
    for name, step in steps.items():
        if args.only and name not in args.only:
            continue
        print(f"... {name}", file=sys.stderr, flush=True)
        try:
            if name in _CHILD:
                # Its own process, so its peak RSS is the aggregator's or the store's, not this harness's.
                out = subprocess.run(
                    [sys.executable, "-c", _CHILD[name].format(smoke=smoke)], capture_output=True, text=True, check=True
                )
                figures.update(json.loads(out.stdout))
            else:
                figures.update(step())
        except Exception as e:  # one failed figure must not lose the others
            figures[f"{name}_error"] = f"{type(e).__name__}: {e}"
            failed.append(name)
            print(f"    {name} failed: {e}", file=sys.stderr, flush=True)
        path.write_text(json.dumps(figures, indent=2) + "\n")  # partial results survive a crash
    if "ingest_events_per_s" in figures and "kafka_tool_records_per_s" in figures:
        figures["ingest_vs_kafka_tool"] = round(figures["ingest_events_per_s"] / figures["kafka_tool_records_per_s"], 2)
    width = max(len(k) for k in figures)
    print(f"\n{'figure':<{width}}  {'value':>14}  target")
    for k, v in figures.items():
        shown = f"{v:,}" if isinstance(v, int | float) and not isinstance(v, bool) else str(v)
        print(f"{k:<{width}}  {shown:>14}  {TARGETS.get(k, '')}")
    for p in (path, args.json):
        if p:
            p.write_text(json.dumps(figures, indent=2) + "\n")
    print(f"\nwritten to {path}", file=sys.stderr)
    if failed:
        sys.exit(f"failed: {', '.join(failed)}")


_CHILD = {
    "replay": "import json; from benchmarks import replay; "
    "print(json.dumps(replay.run(50_000 if {smoke} else 5_000_000, 20_000 if {smoke} else 3_000_000)))",
    "dedup": "import json; from benchmarks import dedup; print(json.dumps(dedup.run(0.1 if {smoke} else 10)))",
    "step": "import json; from benchmarks import step; "
    "print(json.dumps(step.run(40_000 if {smoke} else 2_000_000, [32] if {smoke} else [32, 10_000])))",
}

if __name__ == "__main__":
    main()
