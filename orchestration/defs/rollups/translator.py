"""How dbt nodes appear in Dagster: models under `rollups/`, sources under the keys the stream's assets
have (from each source's `meta.dagster.asset_key`), so the lineage runs topic -> stream tables -> dbt."""

from collections.abc import Mapping
from typing import Any

import dagster as dg
from dagster_dbt import DagsterDbtTranslator, DagsterDbtTranslatorSettings

GROUP = "rollups"
DAILY_TAG = "daily"  # dbt models partitioned by day in Dagster


AC = dg.AutomationCondition
# Not `on_missing()`, which skips what was already missing when the condition first ran (a fresh stack).
# A failed build is not retried every tick: it waits for a fix (a code change) or a manual run.
BUILD_WHEN_MISSING_OR_CHANGED = (
    (AC.missing() | AC.code_version_changed()) & ~AC.any_deps_missing() & ~AC.in_progress() & ~AC.execution_failed()
).with_label("missing or changed")


class TallyDbtTranslator(DagsterDbtTranslator):
    def __init__(self):
        # dbt tests become asset checks on the models they test.
        super().__init__(settings=DagsterDbtTranslatorSettings(enable_asset_checks=True))

    def get_asset_key(self, dbt_resource_props: Mapping[str, Any]) -> dg.AssetKey:
        if dbt_resource_props["resource_type"] == "source":
            return super().get_asset_key(dbt_resource_props)  # meta.dagster.asset_key
        return dg.AssetKey([GROUP, dbt_resource_props["name"]])

    def get_group_name(self, dbt_resource_props: Mapping[str, Any]) -> str | None:
        return GROUP

    def get_automation_condition(self, dbt_resource_props: Mapping[str, Any]) -> dg.AutomationCondition | None:
        # Views and other unpartitioned models only need building when they are missing or their SQL
        # changed: the daemon does that by itself. Daily models are built by their schedule.
        if DAILY_TAG in dbt_resource_props.get("tags", []):
            return None
        return BUILD_WHEN_MISSING_OR_CHANGED
