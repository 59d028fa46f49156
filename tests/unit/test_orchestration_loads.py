import dagster as dg


def test_code_location_loads_without_touching_services():
    from orchestration.definitions import defs

    loaded = defs()
    assert isinstance(loaded, dg.Definitions)
    # Resolving the repository validates every asset, check and schedule together.
    loaded.get_repository_def()


def test_schedules_start_running_unless_the_stack_turns_them_off(monkeypatch):
    from orchestration.defs.resources import schedule_status

    monkeypatch.setenv("TALLY_DAGSTER_SCHEDULES", "true")
    assert schedule_status() == dg.DefaultScheduleStatus.RUNNING
    assert schedule_status(wanted=False) == dg.DefaultScheduleStatus.STOPPED
    monkeypatch.setenv("TALLY_DAGSTER_SCHEDULES", "false")
    assert schedule_status() == dg.DefaultScheduleStatus.STOPPED
