"""Replay/backfill through the dataflow's own code (decode + aggregate), in one process.

Two shapes, because they stress different things:
- dense: events at the 10 B/day rate (115,700 per second of event time) over 10,000 active
  (event_type, source) keys per minute, as a backfill of a busy day replays them: throughput;
- sparse: a whole simulated day over 1 M distinct keys (~2 events per key and minute): the per-cell
  cost and the memory, which must stay flat as buckets close.
"""

from __future__ import annotations

import multiprocessing
import random
import resource
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import msgspec

from tally.aggregator import PartitionAggregator
from tally.events.decode import decode_messages
from tally.flush import seconds_of
from tally.runtime import tune_gc

DAY_RATE = 10_000_000_000 / 86400


def messages(
    n: int, keys_per_minute: int, span_s: float, batch: int, seed: int = 4, part: tuple[int, int] = (0, 1)
) -> Iterator[list[bytes]]:
    """n events spread evenly over span_s seconds of event time, in time order; each minute draws
    from its own keys_per_minute keys. Made batch by batch so the generator's memory does not count
    as the aggregator's. `part` = (i, parts) keeps every parts-th event from the i-th: one Kafka
    partition's share, as the API spreads events over partitions by event_id."""
    rng = random.Random(seed + part[0])
    enc = msgspec.json.Encoder()
    day = datetime(2026, 1, 1, tzinfo=UTC)
    out = []
    for i in range(part[0], n, part[1]):
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


def _replay_part(dense_events: int, part: tuple[int, int], batch: int, barrier, results) -> None:
    batches = list(messages(dense_events, 10_000, dense_events / DAY_RATE, batch, part=part))
    tune_gc()  # as the dataflow's processes do at start
    barrier.wait()  # all processes replay at once, as the dataflow's processes do, on the same cores
    start = time.time()
    n, _rows, _secs = _replay(iter(batches))
    results.put((n, start, time.time()))


def parallel(dense_events: int, processes: int, batch: int = 50_000) -> int:
    """Events/s of `processes` replays side by side, each with its partitions' share of one stream
    at the 10 B/day density: what a backfill gets from the machine, like the dataflow."""
    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(processes), ctx.Queue()
    procs = [
        ctx.Process(target=_replay_part, args=(dense_events, (i, processes), batch, barrier, results))
        for i in range(processes)
    ]
    for p in procs:
        p.start()
    done = [results.get() for _ in procs]
    for p in procs:
        p.join()
    return round(sum(n for n, _s, _e in done) / (max(e for _n, _s, e in done) - min(s for _n, s, _e in done)))


def run(dense_events: int, sparse_events: int, batch: int = 50_000, processes: int = 2) -> dict:
    """`batch` is what the dataflow gets per Kafka poll: TALLY_CONSUME_BATCH (50) messages of up to
    1,000 events."""
    tune_gc()  # as the dataflow's processes do at start
    n, rows, secs = _replay(messages(dense_events, 10_000, dense_events / DAY_RATE, batch))
    out = {
        "replay_events": n,
        "replay_events_per_s_per_process": round(n / secs),
        "replay_rollup_rows": rows,
        f"replay_events_per_s_{processes}_processes": parallel(dense_events, processes, batch),
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
