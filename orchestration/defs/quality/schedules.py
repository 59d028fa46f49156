"""The quality checks run by themselves every hour, and the report every night.

The expectation checks sit on external assets (the stream's tables, which Dagster does not
materialize), so their job selects the checks alone."""

from datetime import timedelta

import dagster as dg

from orchestration.defs.quality.assets import daily, quality_report
from orchestration.defs.quality.checks import quality_checks
from orchestration.defs.resources import schedule_status

quality_checks_job = dg.define_asset_job(
    "quality_checks_job",
    selection=dg.AssetSelection.checks(*quality_checks),
    description="Run the Great Expectations suites on the stream's tables over the last hours.",
)

# Twenty past: after the hourly correction (ten past) has folded the hour just closed.
hourly_quality_checks = dg.ScheduleDefinition(
    name="hourly_quality_checks",
    job=quality_checks_job,
    cron_schedule="20 * * * *",
    execution_timezone="UTC",
    default_status=schedule_status(),
    description="The rollup and raw-event expectations over the last two hours and the current one.",
)

quality_report_job = dg.define_asset_job(
    "quality_report_job",
    selection=dg.AssetSelection.assets(quality_report),
    partitions_def=daily,
    description="Build the day's quality report: page, summary.json and Data Docs.",
)


# 00:45: after the last hour's correction (00:10) and the daily rollups (00:30).
@dg.schedule(
    name="daily_quality_report",
    job=quality_report_job,
    cron_schedule="45 0 * * *",
    execution_timezone="UTC",
    default_status=schedule_status(),
    description="Builds the quality report of the day just ended, once a night.",
)
def daily_quality_report(context: dg.ScheduleEvaluationContext):
    day = (context.scheduled_execution_time - timedelta(days=1)).strftime("%Y-%m-%d")
    return dg.RunRequest(run_key=day, partition_key=day)
