"""A day of history loaded makes that day's daily rollups rebuild, so dbt's rows take it in."""

import dagster as dg

from orchestration.defs.migration.assets import KEY
from orchestration.defs.rollups.assets import daily
from orchestration.defs.rollups.schedules import daily_rollups_job


@dg.asset_sensor(
    asset_key=KEY,
    job=daily_rollups_job,
    name="history_to_daily_rollups",
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Rebuilds the daily rollups of each day of history as soon as its backfill materializes.",
)
def history_to_daily_rollups(context: dg.SensorEvaluationContext, asset_event: dg.EventLogEntry):
    day = asset_event.dagster_event.partition
    if day is None or not daily.has_partition_key(day):
        return dg.SkipReason(f"{day} has no daily rollup partition (they start {daily.start:%Y-%m-%d})")
    return dg.RunRequest(run_key=f"history-{day}-{asset_event.storage_id}", partition_key=day)
