"""History moved onto Tally: one partition per day, loaded through the stream's own validation,
dedup and aggregation (tally.backfill)."""

from datetime import UTC

import dagster as dg

from orchestration.defs.resources import TallyResource
from orchestration.defs.stream.assets import RAW_EVENTS, STREAM_OFFSETS
from tally.backfill import day_source
from tally.backfill.importer import Backfill, connect_error
from tally.settings import Settings

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
