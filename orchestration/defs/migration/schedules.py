"""The comparison runs by itself while there is a legacy system to compare with: every hour, twenty
minutes past, for the hour just ended (closed in Tally by then, and past the correction at ten)."""

import dagster as dg

from orchestration.defs.migration.assets import legacy_comparison
from orchestration.defs.resources import schedule_status
from tally.settings import Settings

legacy_comparison_job = dg.define_asset_job(
    "legacy_comparison_job",
    selection=dg.AssetSelection.assets(legacy_comparison),
    partitions_def=legacy_comparison.partitions_def,
    description="Compare the hour's counts and sums per event type in the legacy system and in Tally.",
)

hourly_legacy_comparison = dg.build_schedule_from_partitioned_job(
    legacy_comparison_job,
    minute_of_hour=20,
    name="hourly_legacy_comparison",
    # Stopped where no legacy system is configured: it would only fail every hour.
    default_status=schedule_status(bool(Settings().legacy_dsn)),
)
