"""The staged rollout's choices and its shadow comparison, on answers built here."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from tally.api import rollout
from tally.settings import Settings
from tally.storage.aggregates import AggregateQuery

T0 = datetime(2026, 12, 1, 10, tzinfo=UTC)


def series(*points: tuple[int, int, float | None, int]) -> bytes:
    """One series of (minute offset, count, sum, late_count) points."""
    pts = [
        {"t": (T0 + timedelta(minutes=m)).isoformat(), "count": c, "sum": s, "late_count": late, "final": True}
        for m, c, s, late in points
    ]
    return json.dumps([{"group": {"event_type": "a"}, "points": pts}]).encode()


def closed_before(minute: int):
    return lambda t: t + timedelta(minutes=1) <= T0 + timedelta(minutes=minute)


def test_points_with_late_events_still_to_fold_are_not_compared():
    tally = series((0, 10, 5.0, 0), (1, 7, 3.0, 2))  # minute 1: two late events not in count yet
    legacy = series((0, 10, 5.0 + 1e-12, 0), (1, 9, 4.0, 0))
    assert rollout.compare_points(tally, legacy, closed_before(5)) == "match"
    assert rollout.compare_points(series((0, 10, 5.0, 0)), series((0, 11, 5.0, 0)), closed_before(5)) == "differ"
    assert rollout.compare_points(series((0, 10, 5.0, 0)), series((0, 10, 5.1, 0)), closed_before(5)) == "differ"


def test_only_points_final_in_both_systems_are_compared_and_none_is_skipped_not_matched():
    tally, legacy = series((0, 10, 5.0, 0), (3, 1, 1.0, 0)), series((0, 10, 5.0, 0), (3, 2, 1.0, 0))
    assert rollout.compare_points(tally, legacy, closed_before(2)) == "match"
    assert rollout.compare_points(tally, legacy, closed_before(4)) == "differ"
    assert rollout.compare_points(series((0, 10, 5.0, 0)), series(), closed_before(5)) == "differ"
    assert rollout.compare_points(tally, legacy, closed_before(0)) == "skipped"


def test_the_share_goes_to_legacy_only_for_what_it_can_answer_and_not_while_it_is_broken():
    s = Settings(legacy_dsn="postgresql://legacy", legacy_read_share=0.5)
    q = AggregateQuery(T0, T0 + timedelta(hours=1), "1m", ["count", "sum"], [], [], [])
    assert rollout.choose(s, q, rng=lambda: 0.49) == "legacy"
    assert rollout.choose(s, q, rng=lambda: 0.5) == "tally"
    assert rollout.choose(s, AggregateQuery(**{**q.__dict__, "metrics": ["unique_users"]}), rng=lambda: 0.0) == "tally"
    rollout.breaker.failed()
    try:
        assert rollout.choose(s, q, rng=lambda: 0.0) == "tally"
    finally:
        rollout.breaker.until = 0.0
    assert rollout.choose(s, q, rng=lambda: 0.0) == "legacy"
