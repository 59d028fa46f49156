"""The Great Expectations suites (expectations/) as asset checks on the stream's tables, over a
recent window: by default the two whole hours before the current one and the current one so far
(its rows are held to the row rules; an hour's contract with its minutes is judged once it has
closed). The hourly schedule (schedules.py) runs them; in the UI a run can set another window.

Written here rather than with dagster-ge, which supports only GX before 1.0. GX is imported when a
check runs (seconds), never when Dagster loads these definitions.
"""

from datetime import UTC, datetime, timedelta

import dagster as dg
from pydantic import Field

from expectations import StoreUnavailable
from orchestration.defs.quality.check_results import check_result, per_table, unavailable, window_text
from orchestration.defs.resources import TallyResource
from orchestration.defs.stream.assets import RAW_EVENTS, ROLLUP_1H, ROLLUP_1M

ROLLUP_CHECK = "rollup_expectations"
RAW_CHECK = "raw_event_expectations"
# The rollup suite's batch has both tables, told apart by the bucket width in seconds.
WIDTHS = {60: ROLLUP_1M, 3600: ROLLUP_1H}
HOUR = timedelta(hours=1)


class Window(dg.Config):
    hours: int = Field(default=2, ge=0, description="Whole hours checked before the hour `until` falls in.")
    until: str = Field(
        default="", description="Where the window ends, ISO 8601 with a zone (2026-11-26T10:00Z); empty: now."
    )

    def bounds(self) -> tuple[datetime, datetime]:
        end = datetime.fromisoformat(self.until).astimezone(UTC) if self.until else datetime.now(UTC)
        return end.replace(minute=0, second=0, microsecond=0) - self.hours * HOUR, end


class SampleWindow(Window):
    sample: int = Field(default=1000, ge=1, description="Raw events read from Cassandra, newest first.")


@dg.multi_asset_check(
    name=ROLLUP_CHECK,
    specs=[
        dg.AssetCheckSpec(
            ROLLUP_CHECK,
            asset=ROLLUP_1M,
            description=(
                "Great Expectations suite tally.rollups on the minute rows of the last hours: keys never null,"
                " counts not negative, value_min <= value_max, unique users <= events, event types as ingest"
                " allows, and every closed hour's minutes match its hour row and are final."
            ),
        ),
        dg.AssetCheckSpec(
            ROLLUP_CHECK,
            asset=ROLLUP_1H,
            description=(
                "Great Expectations suite tally.rollups on the hour rows of the last hours: the row rules of"
                " rollup_1m, and every closed hour has its hour row, equal to its minutes, final."
            ),
        ),
    ],
    description="Runs the rollup suite once over both tables; each table fails on the rows that are its own.",
)
def rollup_expectations(context: dg.AssetCheckExecutionContext, config: Window, tally: TallyResource):
    from expectations import validate_rollups

    start, end = config.bounds()
    window = window_text(start, end)
    try:
        outcome = validate_rollups(tally.settings(), start, end)
    except StoreUnavailable as e:
        context.log.error(f"rollup expectations not checked: {e}")
        for asset in WIDTHS.values():
            yield unavailable(asset, ROLLUP_CHECK, str(e), window)
        return
    for asset, broken in per_table(outcome, WIDTHS).items():
        yield check_result(asset, ROLLUP_CHECK, outcome, broken, window)


@dg.asset_check(
    asset=RAW_EVENTS,
    name=RAW_CHECK,
    description=(
        "Great Expectations suite tally.raw_events on a sample of the raw events stored in the last hours"
        " (the newest of each event type the rollups know): every event readable, under the schema ingest"
        " enforces (lengths, attributes, no control characters) and in its own chunk; an event time far"
        " ahead of the clock is a warning."
    ),
)
def raw_event_expectations(context: dg.AssetCheckExecutionContext, config: SampleWindow, tally: TallyResource):
    from expectations import validate_raw_sample

    start, end = config.bounds()
    window = window_text(start, end)
    try:
        outcome = validate_raw_sample(tally.settings(), start, end, config.sample)
    except StoreUnavailable as e:
        context.log.error(f"raw event expectations not checked: {e}")
        return unavailable(RAW_EVENTS, RAW_CHECK, str(e), window)
    return check_result(RAW_EVENTS, RAW_CHECK, outcome, outcome.failed, window)


quality_checks = [rollup_expectations, raw_event_expectations]
