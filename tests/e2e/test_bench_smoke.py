"""The benchmark harness runs end to end and its counts are exact (figures, not speed, are checked)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

from tally.settings import REPO_ROOT


def test_bench_smoke_produces_every_figure_and_exact_counts(stack, tmp_path):
    out = tmp_path / "bench.json"
    bench = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.run", "--smoke", "--json", str(out)],
        cwd=REPO_ROOT,
        env=os.environ,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        stdout, stderr = bench.communicate(timeout=600)
    except subprocess.TimeoutExpired:
        # Where it hangs, not only that it did: the harness prints its threads' stacks on SIGUSR1.
        bench.send_signal(signal.SIGUSR1)
        time.sleep(3)
        bench.kill()
        stdout, stderr = bench.communicate()
        raise AssertionError(f"the smoke run took over 600 s; its stacks and output:\n{stderr[-6000:]}") from None
    assert bench.returncode == 0, stdout[-2000:] + stderr[-2000:]
    figures = json.loads(out.read_text())
    for key in (
        "ingest_events_per_s",
        "kafka_tool_records_per_s",
        "ingest_vs_kafka_tool",
        "e2e_events_per_s",
        "freshness_p99_s",
        "aggregate_p99_ms",
        "aggregate_columns_p99_ms",
        "aggregate_columns_zstd_bytes",
        "idle_aggregate_p99_ms",
        "filtered_page100_p99_ms",
        "replay_events_per_s_per_process",
        "replay_peak_rss_mib",
        "e2e_dataflow_rss_mib",
        "dedup_us_per_event",
        "step_32_us_per_event",
        "dedup_disk_mib_per_million_ids",
        "idle_dagster_rss_mib",
        "catchup_32_events_per_s",
        "backfill_1p_events_per_s",
        "backfill_2p_events_per_s",
        "dualwrite_off_events_per_s",
        "dualwrite_postgres_events_per_s",
        "dualwrite_down_events_per_s",
    ):
        assert isinstance(figures[key], int | float) and figures[key] > 0, key
    assert figures["e2e_exact"] is True  # every (minute, type, source) cell, not only the total
    assert figures["e2e_cells"] > 1
    assert figures["e2e_counted"] == figures["e2e_accepted"] > 0
    # The catch-up stopped the dataflow, filled Kafka, started it again and read every cell back.
    assert figures["catchup_32_exact"] is True and figures["catchup_32_cells"] >= 32
    # Every backfilled event was stored once and counted in its cell, by one process and by two.
    assert figures["backfill_1p_exact"] is True and figures["backfill_2p_exact"] is True
    # Dual write: every accepted event forwarded, dropped or still buffered, with the legacy side up or down;
    # with it up (and nothing dropped), the comparison finds both systems equal.
    assert figures["dualwrite_postgres_all_accounted"] is True and figures["dualwrite_down_all_accounted"] is True
    assert figures["dualwrite_down_forwarded"] == 0 and figures["dualwrite_down_dropped"] > 0
    for run in ("postgres", "postgres_paced"):
        forwarded, accepted = figures[f"dualwrite_{run}_forwarded"], figures[f"dualwrite_{run}_accepted"]
        assert figures[f"compare_{run}_legacy_events"] == forwarded
        assert figures[f"compare_{run}_tally_events"] == accepted == 20_000
        assert (figures[f"compare_{run}_differing_event_types"] == 0) == (forwarded == accepted)
    assert "e2e_events_per_s" in stdout  # the table is printed
