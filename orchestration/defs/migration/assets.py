"""Moving onto Tally: history loaded one day per partition through the stream's own validation,
dedup and aggregation (tally.backfill), and the legacy system compared with Tally hour by hour
(tally.legacy.compare)."""

from datetime import UTC

import dagster as dg

from orchestration.defs.corrections.assets import closed_hour
from orchestration.defs.resources import TallyResource
from orchestration.defs.stream.assets import LATE_EVENTS, RAW_EVENTS, ROLLUP_1M, STREAM_OFFSETS
from tally.backfill import day_source
from tally.backfill.importer import Backfill, connect_error
from tally.legacy import compare
from tally.settings import Settings
from tally.storage import operation_runs

KEY = dg.AssetKey(["migration", "history_backfill"])
# History reaches further back than the dbt rollups' partitions; days before this are not listed.
history = dg.DailyPartitionsDefinition(start_date=Settings().backfill_start_date, timezone="UTC")


@dg.asset(
    key=KEY,
    group_name="migration",
    kinds={"python", "cassandra", "postgres"},
    deps=[STREAM_OFFSETS, RAW_EVENTS],
    partitions_def=history,
)
def history_backfill(context: dg.AssetExecutionContext, tally: TallyResource):
    """Loads one day of history from the legacy system (files under TALLY_BACKFILL_DIR named by the
    day, or TALLY_BACKFILL_QUERY on TALLY_BACKFILL_DSN) into Tally's rollups and raw storage.

    Each row is checked by the ingest's own rules: rejected rows are listed below with their row
    number, field and reason, never dropped silently. Events already stored are skipped by event_id,
    so materializing a day twice changes nothing. Hours the stream has closed are added here; a day
    the stream is still in goes through Kafka like live events. The day's daily rollups are rebuilt
    afterwards by the `history_to_daily_rollups` sensor.
    """
    settings = tally.settings()
    window = context.partition_time_window
    start, end = window.start.astimezone(UTC), window.end.astimezone(UTC)
    try:
        source = day_source.for_day(settings, start, end)
    except day_source.NoSource as e:
        raise dg.Failure(description=str(e)) from None
    try:
        job = Backfill(settings, f"dagster:{source.identity}:{context.partition_key}", source.label)
    except Exception as e:
        raise dg.Failure(description=connect_error(e)) from None
    try:
        progress = job.load(
            source.rows, on_chunk=lambda p: context.log.info(f"{p.counts.line()} ({p.rate:,.0f} rows/s)")
        )
        rejects = job.rejects(limit=50)
    except Exception as e:
        raise dg.Failure(
            description=f"the backfill stopped: {connect_error(e)}; rerun the partition to go on"
        ) from None
    finally:
        job.close()
    c = progress.counts
    table = "\n".join(f"| {row} | {field or ''} | {reason.replace('|', '/')} |" for row, field, reason in rejects)
    return dg.MaterializeResult(
        metadata={
            "source": dg.MetadataValue.text(source.label),
            "rows_read": dg.MetadataValue.int(c.rows),
            "stored_directly": dg.MetadataValue.int(c.stored),
            "through_stream": dg.MetadataValue.int(c.via_stream),
            "duplicates": dg.MetadataValue.int(c.duplicates),
            "rejected": dg.MetadataValue.int(c.rejected),
            "rows_per_second": dg.MetadataValue.float(round(progress.rate, 1)),
            "chunks_done_before": dg.MetadataValue.int(progress.skipped_chunks),
            "backfill_run": dg.MetadataValue.int(job.run_id),
            "rejected_rows": dg.MetadataValue.md(
                "| row | field | reason |\n|---|---|---|\n"
                + table
                + (
                    f"\n\nFirst 50 of {c.rejected}; all: `select * from backfill_rejects where run_id = {job.run_id}`"
                    if c.rejected > 50
                    else ""
                )
                if rejects
                else "none"
            ),
        }
    )


LEGACY_EVENTS = dg.AssetKey(["migration", "legacy_events"])
COMPARISON = dg.AssetKey(["migration", "legacy_comparison"])
MATCHES_LEGACY = "matches_legacy"
hourly = dg.HourlyPartitionsDefinition(start_date="2026-11-01-00:00", timezone="UTC")

legacy_events = dg.AssetSpec(
    LEGACY_EVENTS,
    group_name="migration",
    kinds={"postgres"},
    description=(
        "The legacy system's events: the table TALLY_LEGACY_TABLE on TALLY_LEGACY_DSN, filled by dual write"
        " (TALLY_LEGACY_SINK=postgres) or by the legacy system itself. Not written by Tally's pipeline."
    ),
)


@dg.asset(
    key=COMPARISON,
    group_name="migration",
    kinds={"python", "postgres"},
    deps=[LEGACY_EVENTS, ROLLUP_1M, LATE_EVENTS],
    partitions_def=hourly,
    check_specs=[
        dg.AssetCheckSpec(
            MATCHES_LEGACY,
            asset=COMPARISON,
            description=(
                "For every event type, the hour's count and sum in Tally equal the legacy system's within"
                " TALLY_LEGACY_TOLERANCE (relative to the larger side)."
            ),
        )
    ],
)
def legacy_comparison(context: dg.AssetExecutionContext, tally: TallyResource):
    """Legacy vs Tally for one hour: the same question (events and the sum of their values per event
    type) asked of the legacy system and of Tally, with how long each took to answer.

    Tally's side is what its rollups hold plus late events the correction step has not folded yet. The
    check fails when any event type differs beyond the tolerance; the rows that differ are listed below
    and in the daily quality report (/quality/). Runs every hour, twenty minutes past, for the hour
    just closed, while TALLY_LEGACY_DSN is set; materialize any hour to compare it again.
    """
    settings = tally.settings()
    start, end = closed_hour(context, settings)
    try:
        result = compare.compare(settings, start, end)
    except ValueError as e:
        raise dg.Failure(description=str(e)) from None
    compare.save(settings, result)
    differing = result.differing
    totals = result.totals()
    operation_runs.record(settings, "legacy_comparison", start, int(totals["tally_count"]), len(differing))
    rows = "\n".join(
        f"| {r.event_type} | {r.legacy_count:,} | {r.tally_count:,} | {r.legacy_sum:,.6g} | {r.tally_sum:,.6g}"
        f" | {r.difference:.3%} |"
        for r in differing[:20]
    )
    table = (
        "| event type | legacy count | Tally count | legacy sum | Tally sum | difference |\n|---|---|---|---|---|---|\n"
    )
    worst = differing[0].difference if differing else 0.0
    check = dg.AssetCheckResult(
        check_name=MATCHES_LEGACY,
        passed=not differing,
        severity=dg.AssetCheckSeverity.ERROR,
        description=(
            f"{len(differing)} of {len(result.rows)} event types differ beyond {result.tolerance:.3%}"
            if differing
            else f"all {len(result.rows)} event types within {result.tolerance:.3%}"
        ),
        metadata={
            "differing_event_types": dg.MetadataValue.int(len(differing)),
            "largest_difference": dg.MetadataValue.float(round(worst, 6)),
        },
    )
    return dg.MaterializeResult(
        metadata={
            "event_types": dg.MetadataValue.int(len(result.rows)),
            "legacy_events": dg.MetadataValue.int(int(totals["legacy_count"])),
            "tally_events": dg.MetadataValue.int(int(totals["tally_count"])),
            "differing_event_types": dg.MetadataValue.int(len(differing)),
            "legacy_query_ms": dg.MetadataValue.float(round(result.legacy_s * 1000, 1)),
            "tally_query_ms": dg.MetadataValue.float(round(result.tally_s * 1000, 1)),
            "differences": dg.MetadataValue.md(table + rows if differing else "none beyond the tolerance"),
        },
        check_results=[check],
    )
