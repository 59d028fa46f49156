"""The dedup store's cost: microseconds per event, disk and memory per million event ids.

Runs `tally.dedup.SeenIds` as the dataflow does (50,000-event batches, a synced commit per
batch) over random UUID ids, in its own process so its RSS is the store's. Every id is new, the
store's worst case: a lookup that misses and an insert.
"""

from __future__ import annotations

import resource
import tempfile
import time
import uuid
from pathlib import Path

from tally.dedup import SeenIds


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run(million_ids: float = 5, batch: int = 50_000) -> dict:
    n = int(million_ids * 1_000_000)
    with tempfile.TemporaryDirectory() as d:
        seen = SeenIds(Path(d) / "p0", horizon_s=3600)
        rss0 = _rss_mib()
        spent = 0.0
        kept = 0
        for start in range(0, n, batch):
            ids = [str(uuid.uuid4()) for _ in range(min(batch, n - start))]
            t0 = time.perf_counter()
            kept += sum(seen.first_copies(ids, list(range(start, start + len(ids)))))
            seen.commit(0)
            spent += time.perf_counter() - t0
        assert kept == n  # random UUIDs: no copies, so nothing may be suppressed
        seen.db.flush()
        disk = seen.disk_bytes()
        seen.close()
    return {
        "dedup_ids": n,
        "dedup_us_per_event": round(spent / n * 1e6, 2),
        "dedup_disk_mib_per_million_ids": round(disk / 2**20 / million_ids, 1),
        "dedup_peak_rss_mib": round(_rss_mib()),
        "dedup_rss_growth_mib": round(_rss_mib() - rss0),
    }


if __name__ == "__main__":
    import json

    print(json.dumps(run()))
