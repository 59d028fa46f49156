"""What the stream sensor reports for a reading of the stream (pure: no Kafka, no Dagster instance)."""

from datetime import UTC, datetime

import dagster as dg

from orchestration.defs.stream.assets import EVENTS, STREAM_TABLES
from orchestration.defs.stream.checks import FRESHNESS_CHECK
from orchestration.defs.stream.sensors import FRESHNESS_UNCHANGED_S, LAST_UPDATED, STILL_CURRENT_S, Seen, reports
from tally.storage.stream_progress import Partition, Progress

T0 = 1_800_000_000.0


def progress(now: float, committed: tuple[int, int], ends: tuple[int, int], unread_since=(None, None)) -> Progress:
    mark = datetime.fromtimestamp(now - 60, UTC)
    parts = [Partition(p, ends[p], committed[p], mark, mark, unread_since[p]) for p in (0, 1)]
    return Progress("events", parts, messages_last_minute=5, read_at=now)


def kinds(events) -> list[tuple[str, dg.AssetKey]]:
    """The reports, leaving out the freshness verdicts (checked on their own below)."""
    return [(type(e).__name__, e.asset_key) for e in events if not isinstance(e, dg.AssetCheckEvaluation)]


def verdicts(events) -> dict[dg.AssetKey, bool]:
    out = {e.asset_key: e.passed for e in events if isinstance(e, dg.AssetCheckEvaluation)}
    assert all(e.check_name == FRESHNESS_CHECK for e in events if isinstance(e, dg.AssetCheckEvaluation))
    return out


def stamp(event) -> float:
    return event.metadata[LAST_UPDATED].value


def test_new_commits_materialize_every_stream_table_stamped_with_the_time_they_are_current_to():
    events, seen = reports(progress(T0, (10, 20), (10, 25), (None, T0 - 40)), Seen(), 120)
    assert kinds(events) == [("AssetObservation", EVENTS)] + [("AssetMaterialization", k) for k in STREAM_TABLES]
    # Partition 1 has 5 messages unread, the oldest appended 40 s ago: the tables are current to then.
    assert {stamp(e) for e in events[1 : 1 + len(STREAM_TABLES)]} == {T0 - 40}
    assert events[0].metadata["dataflow_lag_messages"].value == 5
    assert seen.version == "0:10,1:20"


def test_a_quiet_caught_up_stream_is_confirmed_current_once_a_minute_without_new_materializations():
    first, seen = reports(progress(T0, (10, 20), (10, 20)), Seen(), 120)
    assert stamp(first[len(STREAM_TABLES)]) == T0
    again, seen = reports(progress(T0 + 30, (10, 20), (10, 20)), seen, 120)
    assert again == []  # nothing moved, confirmed less than a minute ago
    later, seen = reports(progress(T0 + STILL_CURRENT_S, (10, 20), (10, 20)), seen, 120)
    assert kinds(later) == [("AssetObservation", k) for k in STREAM_TABLES]
    assert {stamp(e) for e in later} == {T0 + STILL_CURRENT_S}


def test_a_stalled_dataflow_with_events_waiting_reports_nothing_new_so_freshness_runs_out():
    _, seen = reports(progress(T0, (10, 20), (10, 20)), Seen(), 120)
    # Events keep arriving (end offsets move) but nothing is committed: only the topic is observed.
    for i, end in enumerate((30, 40, 50), start=1):
        events, seen = reports(progress(T0 + 60 * i, (10, 20), (10, end), (None, T0 + 1)), seen, 120)
        assert kinds(events) == [("AssetObservation", EVENTS)]
    assert seen.as_of == T0


def test_nothing_committed_yet_is_not_reported_as_a_materialization():
    events, _ = reports(progress(T0, (0, 0), (3, 0), (T0 - 5, None)), Seen(), 120)
    assert kinds(events) == [("AssetObservation", EVENTS)]


def test_freshness_is_judged_from_the_stamp_recorded_when_it_changes_and_every_few_minutes():
    events, seen = reports(progress(T0, (10, 20), (10, 20)), Seen(), 120)
    assert verdicts(events) == dict.fromkeys(STREAM_TABLES, True)
    events, seen = reports(progress(T0 + 30, (10, 20), (10, 20)), seen, 120)
    assert verdicts(events) == {}  # unchanged, recorded a moment ago
    # The dataflow stops while events arrive: the stamp stays at T0 and the verdict turns.
    events, seen = reports(progress(T0 + 121, (10, 20), (10, 30), (None, T0 + 100)), seen, 120)
    assert verdicts(events) == dict.fromkeys(STREAM_TABLES, False)
    failed = next(e for e in events if isinstance(e, dg.AssetCheckEvaluation))
    assert "121 s behind" in failed.description and failed.severity == dg.AssetCheckSeverity.ERROR
    events, seen = reports(progress(T0 + 150, (10, 20), (10, 40), (None, T0 + 100)), seen, 120)
    assert verdicts(events) == {}
    events, seen = reports(progress(T0 + 121 + FRESHNESS_UNCHANGED_S, (10, 20), (10, 40), (None, T0 + 100)), seen, 120)
    assert verdicts(events) == dict.fromkeys(STREAM_TABLES, False)  # still failing, recorded again
