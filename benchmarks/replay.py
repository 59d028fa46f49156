"""Replay/backfill through the dataflow's own code (decode + aggregate), in one process, and its
memory at a given number of distinct keys per day."""

from __future__ import annotations

import random
import resource
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import msgspec

from tally.events.schema import decode_messages
from tally.rollup import PartitionAggregator


def messages(n: int, keys_per_day: int, batch: int, seed: int = 4) -> Iterator[list[bytes]]:
    """n events over one day in time order, drawn from keys_per_day distinct (event_type, source),
    made batch by batch so the generator's memory does not count as the aggregator's."""
    rng = random.Random(seed)
    enc = msgspec.json.Encoder()
    day = datetime(2026, 1, 1, tzinfo=UTC)
    per_minute = max(1, keys_per_day // 1440)
    out = []
    for i in range(n):
        sec = i * 86400 / n
        minute = int(sec // 60)
        k = minute * per_minute + rng.randrange(per_minute)
        out.append(
            enc.encode(
                {
                    "event_id": f"r{i}",
                    "event_type": f"type{k // 4}",
                    "source": f"src{k % 4}",
                    "timestamp": (day + timedelta(seconds=sec)).isoformat(),
                    "user_id": f"u{rng.randrange(50_000)}",
                    "value": rng.random() * 100,
                }
            )
        )
        if len(out) == batch:
            yield out
            out = []
    if out:
        yield out


def run(n: int, keys_per_day: int, batch: int = 10_000) -> dict:
    agg = PartitionAggregator(0, allowed_lateness_s=300)
    rows = 0
    seconds = 0.0
    for i, msgs in enumerate(messages(n, keys_per_day, batch)):
        t0 = time.perf_counter()  # only the dataflow's work is timed, not making the messages
        events, _errors = decode_messages(msgs)
        agg.add(events)
        rows += len(agg.flush(i, [], []).rows)
        seconds += time.perf_counter() - t0
    return {
        "replay_events": n,
        "replay_keys_per_day": keys_per_day,
        "replay_events_per_s_per_process": round(n / seconds),
        "replay_rollup_rows": rows,
        "replay_peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
    }
