"""The resource every domain shares: Tally's settings."""

import dagster as dg

from tally.settings import Settings


def schedule_status(wanted: bool = True) -> dg.DefaultScheduleStatus:
    """How a schedule starts: running where it is wanted, unless the stack turned schedules off."""
    on = wanted and Settings().dagster_schedules
    return dg.DefaultScheduleStatus.RUNNING if on else dg.DefaultScheduleStatus.STOPPED


class TallyResource(dg.ConfigurableResource):
    """Tally's settings, read from the same TALLY_* environment the stack's own processes run with
    (`tally up` starts Dagster with it), so Dagster talks to exactly the stores the stream writes."""

    def settings(self) -> Settings:
        return Settings()


@dg.definitions
def resources() -> dg.Definitions:
    return dg.Definitions(resources={"tally": TallyResource()})
