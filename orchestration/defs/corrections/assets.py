"""The late-event correction, one run per closed hour, with the reconciliation of that hour as its
blocking check."""

from datetime import UTC, datetime

import dagster as dg

from orchestration.defs.resources import TallyResource
from orchestration.defs.stream.assets import LATE_EVENTS, RAW_EVENTS
from tally.storage import corrections, operation_runs, reconcile

KEY = dg.AssetKey(["corrections", "late_event_corrections"])
RECONCILED = "reconciled"

# Hours before this are not listed as partitions, but nothing is left behind there: a run folds every
# pending late event before the end of its hour, however old.
hourly = dg.HourlyPartitionsDefinition(start_date="2026-11-01-00:00", timezone="UTC")


@dg.asset(
    key=KEY,
    group_name="corrections",
    kinds={"python", "postgres"},
    deps=[LATE_EVENTS, RAW_EVENTS],
    partitions_def=hourly,
    check_specs=[
        dg.AssetCheckSpec(
            RECONCILED,
            asset=KEY,
            blocking=True,
            description=(
                "Every event stored in Cassandra for this hour is counted exactly once: per event type"
                " and source, distinct raw events = events in the minute rollups + late events not"
                " folded yet. Blocks what reads the rollups downstream in the same run when it fails."
            ),
        )
    ],
)
def late_event_corrections(context: dg.AssetExecutionContext, tally: TallyResource):
    """Adds late events (those that arrived after their minute closed, kept in the late ledger) to the
    minute and hour rollups they missed, for every minute before the end of this hour, and marks them
    folded: `late_count` in answers drains to 0 and `count` takes them in. Copies of events already
    counted (a client retry after the dedup horizon) are found in raw storage and not added.

    Runs on its own every hour, ten minutes past, for the hour just closed. Safe to rerun: each late
    event is added once, whatever stopped an earlier run. Changing a final day makes API workers drop
    their cached answers for it.
    """
    settings = tally.settings()
    start, end = closed_hour(context, settings)
    events = duplicates = 0
    while (folded := corrections.fold_late(settings, until=end)).rows:
        events, duplicates = events + folded.events, duplicates + folded.duplicates
    mismatches = reconcile.reconcile(settings, start, end)
    operation_runs.record(settings, "late_event_corrections", start, events, len(mismatches))
    yield dg.MaterializeResult(
        metadata={
            "folded_events": dg.MetadataValue.int(events),
            "duplicates_found": dg.MetadataValue.int(duplicates),
            "late_events_left": dg.MetadataValue.int(corrections.pending(settings, until=end)),
        }
    )
    yield reconciliation_result(mismatches, start)


def reconciliation_result(mismatches: list[reconcile.Mismatch], hour: datetime) -> dg.AssetCheckResult:
    """The check's outcome, with the disagreeing cells as a table an operator can act on."""
    rows = "\n".join(
        f"| {m.event_type} | {m.source} | {m.raw_distinct} | {m.rollup_count} | {m.late_count} | {m.difference:+d} |"
        for m in mismatches[:50]
    )
    return dg.AssetCheckResult(
        check_name=RECONCILED,
        passed=not mismatches,
        severity=dg.AssetCheckSeverity.ERROR,
        description=(
            f"{hour:%Y-%m-%d %H:00} UTC: every raw event counted exactly once"
            if not mismatches
            else f"{hour:%Y-%m-%d %H:00} UTC: {len(mismatches)} (event type, source) cells disagree;"
            " positive difference = stored but not counted, negative = counted more often than stored"
        ),
        metadata={
            "mismatched_cells": dg.MetadataValue.int(len(mismatches)),
            "events_not_counted": dg.MetadataValue.int(sum(max(0, m.difference) for m in mismatches)),
            "events_counted_twice": dg.MetadataValue.int(sum(max(0, -m.difference) for m in mismatches)),
            **(
                {
                    "cells": dg.MetadataValue.md(
                        "| event type | source | raw | counted | late | difference |\n|---|---|---|---|---|---|\n"
                        + rows
                    )
                }
                if mismatches
                else {}
            ),
        },
    )


def closed_hour(context: dg.AssetExecutionContext, settings) -> tuple[datetime, datetime]:
    """The partition's hour, once the stream has closed it (else the run fails, saying when to rerun)."""
    window = context.partition_time_window
    start, end = window.start.astimezone(UTC), window.end.astimezone(UTC)
    closed = reconcile.closed_until(settings)
    if closed is None or closed < end:
        raise dg.Failure(
            description=(
                f"the hour {start:%Y-%m-%d %H:00} UTC is not closed yet: the stream's watermark less the"
                f" allowed lateness is {_at(closed)}; rerun once it has passed {end:%H:%M} UTC"
            )
        )
    return start, end


def _at(t: datetime | None) -> str:
    return "unknown (the dataflow has committed nothing)" if t is None else f"{t:%Y-%m-%d %H:%M:%S} UTC"
