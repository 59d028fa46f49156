"""The dbt project's manifests, written before the processes that read them start: Dagster reads the
project from target/manifest.json (its definitions never run dbt at import), and the API serves the
named metrics of target/semantic_manifest.json (tally.semantic)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tally.settings import Settings
from tally.stack.service import StackError


def parse_dbt_project(
    settings: Settings,
    env: dict[str, str] | None = None,
    component: str = "dbt",
    target_path: Path | None = None,
) -> None:
    """`dbt parse` (~5 s, no database needed): writes target/manifest.json and semantic_manifest.json,
    or, if the project does not parse, leaves the previous ones as they were and raises StackError
    (named for `component`) with dbt's message. `target_path`: write there instead of target/."""
    project = settings.dbt_project_dir
    if not (project / "dbt_project.yml").exists():
        return
    dbt = Path(sys.executable).parent / "dbt"
    argv = [str(dbt), "--no-use-colors", "parse", "--project-dir", str(project), "--profiles-dir", str(project)]
    argv += ["--quiet"]
    if target_path is not None:
        argv += ["--target-path", str(target_path)]
    done = subprocess.run(
        argv,
        # dbt asks its tracker unless told not to; there is no network here.
        env={**os.environ, **settings.as_env(), "DO_NOT_TRACK": "1", **(env or {})},
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise StackError(component, "the dbt project does not parse:\n" + (done.stdout + done.stderr)[-2000:])
