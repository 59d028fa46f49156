"""Shared helpers: percentiles, and a one-line JSON result per benchmark for BENCHMARKS.md."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

RESULTS = Path(__file__).parent / "results"


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    k = min(len(s) - 1, max(0, round(p / 100 * (len(s) - 1))))
    return s[k]


def report(name: str, figures: dict) -> None:
    width = max(len(k) for k in figures)
    print(f"\n{name}")
    for k, v in figures.items():
        print(f"  {k:<{width}}  {v:,.3f}" if isinstance(v, float) else f"  {k:<{width}}  {v}")
    RESULTS.mkdir(exist_ok=True)
    record = {
        "benchmark": name,
        "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "host": platform.node(),
        **figures,
    }
    with (RESULTS / f"{name}.jsonl").open("a") as f:
        f.write(json.dumps(record) + "\n")


@contextmanager
def background_load(settings, rate: float, keys: int = 400):
    """Ingest at `rate` events/s through the API while the block runs (0: none), from a child
    process so the load generator does not compete for this process's GIL with what is timed.
    Yields a dict that holds the sender's totals once the block is done."""
    out: dict = {}
    if not rate:
        yield out
        return
    args = f"{settings.api_port}, {rate}, {keys}, {os.getpid()}"
    code = f"from benchmarks.common import _load_forever; _load_forever({args})"
    # Its totals go to a file, not a pipe: reading a pipe to its end can wait on whoever else holds it.
    with tempfile.TemporaryFile("w+") as totals:
        child = subprocess.Popen([sys.executable, "-c", code], stdout=totals, text=True)
        try:
            yield out
        finally:
            child.terminate()
            try:
                child.wait(10)
            except subprocess.TimeoutExpired:
                # Seen in CI: a loader still sending 30 s after SIGTERM, under every later step.
                child.kill()
                child.wait(10)
            totals.seek(0)
            lines = totals.read().splitlines()
            if lines:
                out.update(json.loads(lines[-1]))


def _load_forever(port: int, rate: float, keys: int, parent: int) -> None:
    import asyncio
    import uuid

    from benchmarks.bodies import BodyFactory
    from tally.loadgen import post_bodies

    factory = BodyFactory(f"bg{uuid.uuid4().hex[:6]}", 1000, shapes=16, event_types=max(1, keys // 4))
    total = {"accepted": 0, "seconds": 0.0}
    # Short rounds, each reported, until the parent terminates this process, or dies without doing so
    # (a harness killed on a timeout): an orphan would go on loading the stack under the next runs.
    while os.getppid() == parent:
        stats = asyncio.run(
            post_bodies(f"http://127.0.0.1:{port}/api/events", factory.next, 1000, rate, 2.0, 4, gzipped=False)
        )
        total["accepted"] += stats.accepted
        total["seconds"] += stats.seconds
        print(json.dumps(total), flush=True)
