"""The dedup store's cost: microseconds per event, disk and memory per million event ids.

Runs `tally.dedup.SeenIds` as the dataflow does (50,000-event batches, a synced commit per
batch) over random UUID ids, in its own process so its RSS is the store's. Every id is new, the
store's worst case: a lookup that misses and an insert. The first half of the ids goes into one
generation and the second half into the next, so that, as in a live stream past its first hour, a
new id is looked up in two. `--no-filter` runs the store without its in-memory filters
(tally.idfilter), every lookup asking RocksDB.

    python -m benchmarks.dedup --million-ids 10 [--no-filter]
"""

from __future__ import annotations

import resource
import tempfile
import time
import uuid
from pathlib import Path

from tally.dedup import FILTER_BUDGET, SeenIds


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run(million_ids: float = 5, batch: int = 50_000, filters: bool = True) -> dict:
    n = int(million_ids * 1_000_000)
    with tempfile.TemporaryDirectory() as d:
        seen = SeenIds(Path(d) / "p0", horizon_s=3600, filter_budget=FILTER_BUDGET if filters else 0)
        rss0 = _rss_mib()
        looking = committing = 0.0
        kept = 0
        for start in range(0, n, batch):
            ids = [str(uuid.uuid4()) for _ in range(min(batch, n - start))]
            t0 = time.perf_counter()
            kept += sum(seen.first_copies(ids, list(range(start, start + len(ids)))))
            t1 = time.perf_counter()
            seen.commit(0 if start < n // 2 else 3600)
            looking, committing = looking + t1 - t0, committing + time.perf_counter() - t1
        assert kept == n  # random UUIDs: no copies, so nothing may be suppressed
        seen.db.flush()
        disk = seen.disk_bytes()
        seen.close()
    return {
        "dedup_ids": n,
        "dedup_filters": filters,
        "dedup_us_per_event": round((looking + committing) / n * 1e6, 2),
        "dedup_lookup_us_per_event": round(looking / n * 1e6, 2),
        "dedup_commit_us_per_event": round(committing / n * 1e6, 2),
        "dedup_disk_mib_per_million_ids": round(disk / 2**20 / million_ids, 1),
        "dedup_peak_rss_mib": round(_rss_mib()),
        "dedup_rss_growth_mib": round(_rss_mib() - rss0),
    }


if __name__ == "__main__":
    import argparse
    import json

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--million-ids", type=float, default=5)
    ap.add_argument("--no-filter", action="store_true")
    args = ap.parse_args()
    print(json.dumps(run(args.million_ids, filters=not args.no_filter)))
