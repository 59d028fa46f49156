"""The dataflow's aggregate step alone, in one process: where a Kafka batch's time goes, by cardinality.

One partition's share (of 4) of the catch-up workload (benchmarks.workload: 120,000 events a second
of event time, 2 % out of order) goes through `dataflows.aggregate.Aggregate` as the dataflow runs
it while draining a backlog: 400-message batches, dedup on (a RocksDB store in a temporary
directory), flushes every 5 s of a clock advanced at 35,000 events a second, commits every 30 s.
No store is written and no Kafka is read, so the figure is the step's own CPU, without the noise
of the co-located stack the catch-up benchmark measures through.

    python -m benchmarks.step --keys 32 10000 --events 2000000
"""

from __future__ import annotations

import argparse
import functools
import inspect
import tempfile
import time
from pathlib import Path

from benchmarks.common import report
from benchmarks.workload import Workload
from dataflows import aggregate as step
from dataflows.kafka_source import KafkaBatch
from tally import aggregator, flush
from tally.producer import group_messages
from tally.runtime import tune_gc

PARTITIONS = 4
BATCH_MESSAGES = 400  # backlog_consume_batch
DRAIN_RATE = 35_000  # events a second the fake clock moves on by: about a dataflow process's share
SECTIONS = {  # figure name: (owner, method)
    "split": (step.Aggregate, "_split"),
    "decode": (step.Aggregate, "_decode"),
    "dedup": (step.Aggregate, "_drop_copies"),
    "raw_grouping": (flush.RawBatch, "add"),
    "cell_lookup": (aggregator.PartitionAggregator, "add"),
    "flush": (step.Aggregate, "_flush"),
}


def messages(keys: int, events: int, partition: int = 0) -> list[bytes]:
    """One partition's NDJSON messages of the workload, as the API produces them."""
    out = []
    for body in Workload("step", events, keys, start=1_700_000_000).bodies():
        lines = body.split(b"\n")
        ids = [line[13 : line.index(b'"', 13)].decode() for line in lines]  # {"event_id":"...
        out += [m for p, m in group_messages(lines, ids, PARTITIONS) if p == partition]
    return out


def _timed(spent: dict[str, float], name: str, owner, method: str):
    original = getattr(owner, method)

    @functools.wraps(original)
    def timed(*args, **kwargs):
        t0 = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            spent[name] += time.perf_counter() - t0

    is_static = isinstance(inspect.getattr_static(owner, method), staticmethod)
    setattr(owner, method, staticmethod(timed) if is_static else timed)
    return original


def run_one(keys: int, events: int) -> dict:
    msgs = messages(keys, events)
    clock = [0.0]
    spent = dict.fromkeys(SECTIONS, 0.0)
    originals = {name: _timed(spent, name, *where) for name, where in SECTIONS.items()}
    try:
        with tempfile.TemporaryDirectory() as state_dir:
            agg = step.Aggregate(
                300,
                1.0,
                clock=lambda: clock[0],
                wall_clock=lambda: 2e9,
                dedup=(Path(state_dir), 3600),
                backlog=(200, 5.0),
                max_events=200_000,
                commit_interval=30.0,
            )
            state, taken = None, 0
            t0 = time.perf_counter()
            for i in range(0, len(msgs), BATCH_MESSAGES):
                values = msgs[i : i + BATCH_MESSAGES]
                n = sum(v.count(b"\n") + 1 for v in values)
                clock[0] += n / DRAIN_RATE
                batch = KafkaBatch(0, values, list(range(i, i + len(values))), i + len(values), lag=10_000)
                state, _flush = agg(state, batch)
                taken += n
            state.agg.flush(len(msgs))  # what is still open is folded too: the work is all counted
            took = time.perf_counter() - t0
            state.seen.close()
    finally:
        for name, (owner, method) in SECTIONS.items():
            setattr(owner, method, originals[name])
    figures = {"keys_per_minute": keys, "events": taken, "us_per_event": round(took / taken * 1e6, 2)}
    figures |= {f"{name}_us": round(s / taken * 1e6, 2) for name, s in spent.items()}
    return figures


def run(events: int, keys: list[int]) -> dict:
    """The figures of every cardinality, named step_<keys>_<figure> (for `tally bench`)."""
    tune_gc()  # as the dataflow's processes do at start
    out = {}
    for k in keys:
        out |= {f"step_{k}_{name}": v for name, v in run_one(k, events).items() if name != "keys_per_minute"}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--keys", type=int, nargs="+", default=[32, 10_000])
    ap.add_argument("--events", type=int, default=2_000_000, help="of the whole stream; a quarter is replayed")
    args = ap.parse_args()
    tune_gc()  # as the dataflow's processes do at start
    for keys in args.keys:
        report("step", run_one(keys, args.events))


if __name__ == "__main__":
    main()
