"""Dagster's UI as a data engineer sees it after `make run`: the whole lineage on one page, from the
events topic through the stream's tables to the corrections, the dbt rollups and the backfill, with no request
leaving the machine. Writes the screenshot to artifacts/lineage.png."""

from __future__ import annotations

import re
from pathlib import Path

from tally.stack.orchestrator import location_loaded
from tests.e2e.conftest import wait_for

SCREENSHOT = Path(__file__).parent.parent.parent / "artifacts" / "lineage.png"
EXPECTED = {
    # the stream, observed
    "events", "raw_events", "rollup_1m", "rollup_1h", "late_events", "stream_offsets",
    # the hourly correction
    "late_event_corrections",
    # the dbt project
    "stg_rollup_1m", "stg_rollup_1h", "stg_late_events", "rollup_1d", "rollup_1w", "rollup_minutely",
    # moving onto Tally: history, and the legacy system compared with it
    "history_backfill", "legacy_events", "legacy_comparison",
}  # fmt: skip


def test_the_lineage_page_shows_topic_stream_tables_corrections_and_dbt_models_offline(stack, driver):
    wait_for(lambda: location_loaded(stack.dagster_port), timeout_s=120, what="Dagster to load the code location")
    SCREENSHOT.parent.mkdir(exist_ok=True)
    seen = driver("lineage.mjs", f"http://127.0.0.1:{stack.dagster_port}", str(SCREENSHOT))
    assert seen["errors"] == [], seen["errors"]
    assert seen["blocked"] == [], "Dagster's UI asked for something outside the machine"
    drawn = {name for name in EXPECTED if drawn_as(name, seen["text"])}
    assert drawn == EXPECTED, f"missing from the lineage: {sorted(EXPECTED - drawn)}"


def drawn_as(name: str, text: str) -> bool:
    """Zoomed out to fit, the graph draws a long name cut in the middle: late_…_corrections."""
    if name in text:
        return True
    cut = re.findall(r"([\w.]+)\u2026([\w.]+)", text)
    return any(
        name.startswith(head) and name.endswith(tail) and len(head) + len(tail) < len(name) for head, tail in cut
    )
