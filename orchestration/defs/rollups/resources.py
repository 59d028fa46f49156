"""The dbt project (../../../dbt_project) and the dbt CLI that builds it."""

import sys
from pathlib import Path

import dagster as dg
from dagster_dbt import DbtCliResource, DbtProject

from tally.settings import REPO_ROOT

# Dagster reads the project from target/manifest.json, which `dbt parse` writes: `tally up` runs it
# before starting Dagster, and the tests once per session. Nothing parses at import.
dbt_project = DbtProject(project_dir=REPO_ROOT / "dbt_project", profiles_dir=REPO_ROOT / "dbt_project")


@dg.definitions
def resources() -> dg.Definitions:
    # The profile reads TALLY_PG_* from the environment Dagster runs with, so dbt builds in the very
    # database the stream writes.
    # The dbt installed beside this Python: Dagster's processes need not have the venv on PATH.
    dbt = DbtCliResource(project_dir=dbt_project, dbt_executable=str(Path(sys.executable).parent / "dbt"))
    return dg.Definitions(resources={"dbt": dbt})
