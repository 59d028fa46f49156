"""The correction runs by itself: every hour, ten minutes past, for the hour just ended (by then the
watermark has passed it plus the default 5 minutes of allowed lateness)."""

import dagster as dg

from orchestration.defs.corrections.assets import late_event_corrections
from orchestration.defs.resources import schedule_status

late_event_corrections_job = dg.define_asset_job(
    "late_event_corrections_job",
    selection=dg.AssetSelection.assets(late_event_corrections),
    partitions_def=late_event_corrections.partitions_def,
    description="Fold the hour's late events into the rollups, then reconcile the hour.",
)

hourly_corrections = dg.build_schedule_from_partitioned_job(
    late_event_corrections_job,
    minute_of_hour=10,
    name="hourly_late_event_corrections",
    default_status=schedule_status(),
)
