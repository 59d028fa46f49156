import dagster as dg


def test_code_location_loads_without_touching_services():
    from orchestration.definitions import defs

    loaded = defs()
    assert isinstance(loaded, dg.Definitions)
    # Resolving the repository validates every asset, check and schedule together.
    loaded.get_repository_def()
