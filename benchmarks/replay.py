"""Replay/backfill through the dataflow's own code (decode + aggregate), in one process.

Two shapes, because they stress different things:
- dense: events at the 10 B/day rate (115,700 per second of event time) over 10,000 active
  (event_type, source) keys per minute, as a backfill of a busy day replays them: throughput;
- sparse: a whole simulated day over 1 M distinct keys (~2 events per key and minute): the per-cell
  cost and the memory, which must stay flat as buckets close.
"""

from __future__ import annotations

import random
import resource
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import msgspec

from tally.events.schema import decode_messages
from tally.rollup import PartitionAggregator, seconds_of

DAY_RATE = 10_000_000_000 / 86400


def messages(n: int, keys_per_minute: int, span_s: float, batch: int, seed: int = 4) -> Iterator[list[bytes]]:
    """n events spread evenly over span_s seconds of event time, in time order; each minute draws
    from its own keys_per_minute keys. Made batch by batch so the generator's memory does not count
    as the aggregator's."""
    rng = random.Random(seed)
    enc = msgspec.json.Encoder()
    day = datetime(2026, 1, 1, tzinfo=UTC)
    out = []
    for i in range(n):
        sec = i * span_s / n
        minute = int(sec // 60)
        k = minute * keys_per_minute + rng.randrange(keys_per_minute)
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


def _replay(batches: Iterator[list[bytes]], flush_interval_s: float = 1.0) -> tuple[int, int, float]:
    """Decode and aggregate, flushing rollup rows every flush_interval_s of work (the dataflow's
    default cadence) and at the end."""
    agg = PartitionAggregator(0, allowed_lateness_s=300)
    n = rows = 0
    seconds = since_flush = 0.0
    for i, msgs in enumerate(batches):
        t0 = time.perf_counter()  # only the dataflow's work is timed, not making the messages
        events, _errors = decode_messages(msgs)
        agg.add(events, seconds_of(events))
        if since_flush >= flush_interval_s:
            rows += len(agg.flush(i).rows)
            since_flush = 0.0
        took = time.perf_counter() - t0
        seconds += took
        since_flush += took
        n += len(events)
    t0 = time.perf_counter()
    rows += len(agg.flush(n).rows)
    return n, rows, seconds + time.perf_counter() - t0


def run(dense_events: int, sparse_events: int, batch: int = 50_000) -> dict:
    """`batch` is what the dataflow gets per Kafka poll: TALLY_CONSUME_BATCH (50) messages of up to
    1,000 events."""
    n, rows, secs = _replay(messages(dense_events, 10_000, dense_events / DAY_RATE, batch))
    out = {
        "replay_events": n,
        "replay_events_per_s_per_process": round(n / secs),
        "replay_rollup_rows": rows,
    }
    n, rows, secs = _replay(messages(sparse_events, 1_000_000 // 1440, 86400, batch))
    out |= {
        "replay_sparse_events": n,
        "replay_sparse_keys_per_day": 1_000_000,
        "replay_sparse_events_per_s_per_process": round(n / secs),
        "replay_sparse_rollup_rows": rows,
        "replay_peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
    }
    return out
