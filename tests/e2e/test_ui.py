"""The browser UI, driven in Debian's headless Chromium by playwright-core; saves a screenshot."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from tests.e2e.conftest import iso, recent_window, wait_for

SCREENSHOT = Path(__file__).parent.parent.parent / "artifacts" / "ui.png"


def test_ui_charts_live_aggregates_and_pages_matching_events(api, run_id, driver):
    start, _ = recent_window()
    event_type = f"{run_id}.ui"
    events = [
        {
            "event_id": f"{run_id}-{i}",
            "event_type": event_type,
            "timestamp": iso(start.replace(second=i % 60)),
            "source": ["web", "ios"][i % 2],
            "user_id": f"u{i % 7}",
            "value": i,
            "attributes": {"n": i},
        }
        for i in range(120)
    ]
    assert api.post("/api/events", json=events).json()["accepted"] == 120
    agg = {"from": iso(start), "to": iso(start + timedelta(minutes=3)), "event_type": event_type}

    def counted() -> int:
        return sum(p["count"] for s in api.get("/api/aggregate", params=agg).json()["series"] for p in s["points"])

    wait_for(lambda: counted() == 120, what="the UI's events to be counted")
    SCREENSHOT.parent.mkdir(exist_ok=True)
    seen = driver("drive.mjs", str(api.base_url), event_type, str(SCREENSHOT))
    assert seen["errors"] == [], seen["errors"]
    assert seen["error_banner"] == ""
    assert sorted(seen["legend"][1:]) == ["ios", "web"]  # one series per source, after the time column
    assert len(seen["rows"]) == 50 and seen["next_enabled"]
    assert [r[-1] for r in seen["rows"]] == sorted(
        (e["event_id"] for e in events), key=lambda eid: (-(int(eid.rsplit("-", 1)[1]) % 60), eid)
    )[:50]
    assert seen["web_rows"] == 50
    assert SCREENSHOT.stat().st_size > 10_000
