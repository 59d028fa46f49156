"""The browser UI, driven in Debian's headless Chromium by playwright-core; saves screenshots in artifacts/."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.e2e.conftest import iso, recent_window, wait_for

ARTIFACTS = Path(__file__).parent.parent.parent / "artifacts"
SCREENSHOT = ARTIFACTS / "ui.png"
# Two bursts three minutes apart, with nothing between them: what a user saw drawn as a slow fade.
BURSTS = {4: (40, 125_000), 1: (20, 250_000)}  # minutes before the current one: (events, value of each)


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
    assert {"name": "tally_session", "httpOnly": True, "sameSite": "Strict"} in seen["cookies"]
    assert "tally_session" not in seen["script_sees"]
    assert SCREENSHOT.stat().st_size > 10_000


@pytest.fixture(scope="module")
def bursts(api) -> dict:
    """BURSTS sent as one event type, a second type beside it and a third whose name the filter of
    test_the_type_filter_* must not match; returns the types and the bursts' minutes (Unix s)."""
    rid = f"t{uuid.uuid4().hex[:8]}"
    types = {"bursts": f"{rid}.bursts", "other": f"{rid}.other", "decoy": f"{rid}_decoy"}
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    # Minutes back within the allowed lateness (5 min): late events would go to the late ledger instead.
    events, minutes = [], {}
    for back, (n, value) in BURSTS.items():
        minute = now - timedelta(minutes=back)
        minutes[int(minute.timestamp())] = (n, value)
        events += [
            {
                "event_id": f"{rid}-{back}-{i}",
                "event_type": types["bursts"],
                "timestamp": iso(minute.replace(second=i % 60)),
                "source": "web",
                "value": value,
            }
            for i in range(n)
        ]
    for kind in ("other", "decoy"):
        events.append(
            {"event_id": f"{rid}-{kind}", "event_type": types[kind], "timestamp": iso(now - timedelta(minutes=1))}
        )
    assert api.post("/api/events", json=events).json()["accepted"] == len(events)
    agg = {"from": iso(now - timedelta(minutes=5)), "to": iso(now + timedelta(minutes=1)), "group_by": "event_type"}
    agg["event_type"] = list(types.values())

    def counted() -> int:
        return sum(p["count"] for s in api.get("/api/aggregate", params=agg).json()["series"] for p in s["points"])

    wait_for(lambda: counted() == len(events), 60, "the bursts to be counted")
    return {"types": types, "prefix": f"{rid}.", "minutes": minutes}


@pytest.fixture(scope="module")
def charted(api, bursts, driver) -> dict:
    """What the chart was given to draw for the bursts' type over the last 15 minutes, per metric."""
    totals = {
        "count": sum(n for n, _ in BURSTS.values()),
        "sum": sum(n * v for n, v in BURSTS.values()),
        "avg": sum(v for _, v in BURSTS.values()),
    }
    ARTIFACTS.mkdir(exist_ok=True)
    seen = driver(
        "chart.mjs", str(api.base_url), bursts["types"]["bursts"], json.dumps(totals), str(ARTIFACTS / "ui-chart")
    )
    assert seen["errors"] == [], seen["errors"]
    assert seen["error_banner"] == ""
    return seen["charts"]


def test_empty_minutes_are_drawn_as_zero_counts_and_sums_and_as_gaps_in_averages(charted, bursts):
    minutes = bursts["minutes"]
    assert sorted(charted) == ["avg", "count", "sum"]
    for metric, chart in charted.items():
        # Each metric's own times: the 15-minute window moves on with the clock between the redraws.
        times = chart["times"]
        # Every minute of the range is drawn, not only the two with events.
        assert len(times) == 15 and all(b - a == 60 for a, b in zip(times, times[1:], strict=False)), metric
        assert set(minutes) <= set(times), metric
        expected = {
            "count": [minutes[t][0] if t in minutes else 0 for t in times],
            "sum": [minutes[t][0] * minutes[t][1] if t in minutes else 0 for t in times],
            "avg": [minutes[t][1] if t in minutes else None for t in times],
        }[metric]
        assert chart["values"] == expected, metric
        assert (ARTIFACTS / f"ui-chart-{metric}.png").stat().st_size > 5_000


@pytest.mark.parametrize("metric", ["count", "sum", "avg"])
def test_the_y_axis_label_stays_clear_of_its_tick_labels(charted, metric):
    chart = charted[metric]
    left, _top, _right, bottom = chart["plot_box"]
    labels = [t for t in chart["texts"] if t["rotated"] and t["text"] == chart["label"]]
    # Left of the plotting area and not below it: the x axis's times are below.
    ticks = [t for t in chart["texts"] if not t["rotated"] and t["box"][2] <= left + 1 and t["box"][1] < bottom]
    assert len(labels) == 1 and len(ticks) >= 3, chart["texts"]
    # Right of the label's whole column, not only clear of it where the label happens to be drawn: a
    # longer label (a named metric's) or other ticks would run into one that reaches in.
    assert [t["text"] for t in ticks if t["box"][0] < labels[0]["box"][2]] == [], (labels[0], ticks)
    assert all(t["box"][0] >= 0 for t in ticks), ticks  # none cut off at the canvas's edge
    assert len({t["text"] for t in ticks}) == len(ticks), ticks  # short labels, still each its own value


def test_the_type_filter_narrows_the_list_and_keeps_hidden_choices(api, bursts, driver):
    types = bursts["types"]
    shot = ARTIFACTS / "ui-type-filter.png"
    ARTIFACTS.mkdir(exist_ok=True)
    seen = driver("type_filter.mjs", str(api.base_url), bursts["prefix"], types["bursts"], types["other"], str(shot))
    assert seen["errors"] == [], seen["errors"]
    assert seen["error_banner"] == ""
    assert seen["filter_label"] == "typefilter"
    # Typed in capitals, the prefix still matches: exactly the two types that have it stay visible.
    assert types["decoy"] in seen["by_prefix"]["all"]
    assert sorted(seen["by_prefix"]["visible"]) == sorted([types["bursts"], types["other"]])
    assert seen["by_second"]["visible"] == [types["other"]]
    assert seen["by_second"]["selected"] == [types["bursts"]]  # chosen, out of sight
    assert sorted(seen["after_second_chosen"]["selected"]) == sorted([types["bursts"], types["other"]])
    assert sorted(seen["chart_asked"]) == sorted([types["bursts"], types["other"]])
    assert "1 of" in seen["after_second_chosen"]["count"] and "2 selected" in seen["after_second_chosen"]["count"]
    assert seen["cleared"]["visible"] == seen["cleared"]["all"]
    assert sorted(seen["cleared"]["selected"]) == sorted([types["bursts"], types["other"]])
    assert shot.stat().st_size > 10_000
