"""Shared helpers: percentiles, and a one-line JSON result per benchmark for BENCHMARKS.md."""

from __future__ import annotations

import json
import platform
import time
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
