"""Freshness of the stream's tables: each fails when it has not caught up with the events topic for
TALLY_STREAM_FRESHNESS_S (default 2 minutes): the dataflow stopped, stuck, or far behind.

"Caught up" is the stamp the stream sensor reports (sensors.py): the time up to which a table holds
every event Kafka received, so a quiet stream stays fresh and a stalled one goes stale even while
its process is alive. The stream sensor records their verdict itself as it reports (no run, no
process); run from the UI, the checks below compute the same from the recorded stamps.

Checks rather than a FreshnessPolicy on the specs (which Dagster now prefers): a policy looks only at
when a materialization was recorded, so a dataflow that keeps committing while falling ever further
behind would look fresh; the checks read the reported "current to" stamp.
"""

import warnings
from datetime import timedelta

import dagster as dg

from orchestration.defs.stream.assets import STREAM_TABLES
from tally.settings import Settings

FRESHNESS_CHECK = "freshness_check"  # the name build_last_update_freshness_checks gives each check


def freshness_checks(lower_bound: timedelta) -> list[dg.AssetChecksDefinition]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dg.SupersessionWarning)  # see the module docstring
        return list(
            dg.build_last_update_freshness_checks(
                assets=STREAM_TABLES, lower_bound_delta=lower_bound, severity=dg.AssetCheckSeverity.ERROR
            )
        )


stream_freshness_checks = freshness_checks(timedelta(seconds=Settings().stream_freshness_s))
