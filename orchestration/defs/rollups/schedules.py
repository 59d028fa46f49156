"""The daily rollups build by themselves: at 00:30 UTC, the day just ended and the days before it within
the look-back, so late events the hourly correction folded into those days reach the daily rows."""

from datetime import timedelta

import dagster as dg

from orchestration.defs.resources import schedule_status
from orchestration.defs.rollups.assets import daily, daily_rollups, views_over_daily

# Late events are folded within about an hour of their hour closing; three days leave room for a
# correction that could not run for a day or two. Keep in step with dbt's `lookback_days` default.
LOOKBACK_DAYS = 3

daily_rollups_job = dg.define_asset_job(
    "daily_rollups_job",
    # The views over the daily models (weekly) ride along: they cannot wait for "all days present".
    selection=dg.AssetSelection.assets(daily_rollups, views_over_daily),
    partitions_def=daily,
    description="Build the daily dbt rollups of the partition's day and the views over them, then run their dbt tests.",
)


@dg.schedule(
    name="daily_rollups_schedule",
    job=daily_rollups_job,
    cron_schedule="30 0 * * *",
    execution_timezone="UTC",
    default_status=schedule_status(),
    description=f"Rebuilds the last {LOOKBACK_DAYS} whole days of the daily rollups, one run a day.",
)
def daily_rollups_schedule(context: dg.ScheduleEvaluationContext):
    today = context.scheduled_execution_time.replace(hour=0, minute=0, second=0, microsecond=0)
    keys = set(daily.get_partition_keys(current_time=today))
    for back in range(1, LOOKBACK_DAYS + 1):
        key = (today - timedelta(days=back)).strftime("%Y-%m-%d")
        if key in keys:
            yield dg.RunRequest(run_key=f"{key}@{today:%Y-%m-%d}", partition_key=key)
