"""The dbt rollups: staging views over the stream's tables, then daily (and weekly) rollups that merge
unique-user sketches, and the views the metric definitions read.

Models tagged `daily` in dbt are partitioned by day here: a run builds exactly its days, and
rebuilding one day from the UI is a one-partition backfill. The other models are views (and a time
spine), unpartitioned, built when missing or changed (translator.py): those the daily models read, and
those that read the daily models.
"""

import json
from collections.abc import Mapping
from datetime import datetime

import dagster as dg
from dagster_dbt import DbtCliResource, dbt_assets

from orchestration.defs.rollups.resources import dbt_project
from orchestration.defs.rollups.translator import DAILY_TAG, TallyDbtTranslator

DAILY = f"tag:{DAILY_TAG}"
AFTER_DAILY = f"{DAILY}+"  # the daily models and everything downstream of them

# Only whole days: the day in progress is built by its own run after midnight (see schedules.py).
daily = dg.DailyPartitionsDefinition(start_date="2026-11-01", timezone="UTC")


def day_vars(start: datetime, end: datetime) -> Mapping[str, str]:
    """dbt vars that make a `daily` model rebuild exactly the days of [start, end), whole UTC days."""
    if end <= start or start.time() != end.time() or start.hour or start.minute:
        raise ValueError(f"a window of whole UTC days is needed, got {start} .. {end}")
    return {"min_day": start.date().isoformat(), "max_day": end.date().isoformat()}


@dbt_assets(
    manifest=dbt_project.manifest_path,
    project=dbt_project,
    select=DAILY,
    partitions_def=daily,
    dagster_dbt_translator=TallyDbtTranslator(),
    name="daily_rollups",
)
def daily_rollups(context: dg.AssetExecutionContext, dbt: DbtCliResource):
    window = context.partition_time_window
    yield from dbt.cli(["build", "--vars", json.dumps(day_vars(window.start, window.end))], context=context).stream()


@dbt_assets(
    manifest=dbt_project.manifest_path,
    project=dbt_project,
    exclude=AFTER_DAILY,
    dagster_dbt_translator=TallyDbtTranslator(),
    name="rollup_views",
)
def rollup_views(context: dg.AssetExecutionContext, dbt: DbtCliResource):
    yield from dbt.cli(["build"], context=context).stream()


@dbt_assets(
    manifest=dbt_project.manifest_path,
    project=dbt_project,
    select=AFTER_DAILY,
    exclude=DAILY,
    dagster_dbt_translator=TallyDbtTranslator(),
    name="views_over_daily",
)
def views_over_daily(context: dg.AssetExecutionContext, dbt: DbtCliResource):
    yield from dbt.cli(["build"], context=context).stream()
