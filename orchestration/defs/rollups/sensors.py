"""Builds the unpartitioned dbt models (views, the time spine) when they are missing or their SQL
changed: a new view an analyst adds exists in the database a minute after Dagster loads it."""

import dagster as dg

from orchestration.defs.rollups.translator import GROUP

rollup_automation = dg.AutomationConditionSensorDefinition(
    "rollup_automation",
    target=dg.AssetSelection.groups(GROUP),
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=60,
    description="Materializes dbt views of the rollups group that are missing or whose code changed.",
)
