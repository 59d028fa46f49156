"""Dagster in the local stack: the webserver (the UI, port TALLY_DAGSTER_PORT) and the daemon (schedules,
sensors, the run queue), under one supervisor like the API, with the instance kept in the stack's
PostgreSQL (database `dagster`), so runs, checks and sensor cursors survive a restart.

Dagster only observes and refines what the stream writes; nothing in ingest or queries waits for
it, so a failed or stopped Dagster leaves the API and the dataflow as they were.
"""

from __future__ import annotations

import sys
from pathlib import Path

import psycopg

from tally.settings import REPO_ROOT
from tally.stack.apps import Supervised, http_ok
from tally.stack.dbt import parse_dbt_project
from tally.stack.service import StackError

# Written once per start from the settings; passwords stay in the environment ({env: ...}).
_INSTANCE_YAML = """\
# Written by `tally up` (tally/stack/orchestrator.py); edits are overwritten on the next start.
storage:
  postgres:
    postgres_db:
      hostname: 127.0.0.1
      port: {port}
      db_name: {db}
      username: {{env: TALLY_PG_USER}}
      password: {{env: TALLY_PG_PASSWORD}}
      # SQLAlchemy 2.1 maps postgresql:// to psycopg 3, and dagster-postgres's LISTEN/NOTIFY
      # then fails (runs stay NOT_STARTED): keep it on psycopg2.
      scheme: postgresql+psycopg2
run_coordinator:
  module: dagster.core.run_coordinator
  class: QueuedRunCoordinator
  config:
    # Two cores, shared with the stream: one heavy run at a time, a second for quick checks.
    max_concurrent_runs: 2
run_monitoring:
  enabled: true
local_artifact_storage:
  module: dagster.core.storage.root
  class: LocalArtifactStorage
  config:
    base_dir: {artifacts}
compute_logs:
  module: dagster.core.storage.local_compute_log_manager
  class: LocalComputeLogManager
  config:
    base_dir: {compute_logs}
retention:
  # The stream sensor ticks every 30 s; keep a week of ticks that did something, a day of skips.
  sensor:
    purge_after_days:
      skipped: 1
      failure: 7
      success: 7
telemetry:
  enabled: false
nux:
  enabled: false
"""


class Dagster(Supervised):
    name = "dagster"
    # The webserver's code server and the daemon's each load the definitions (~5 s a process).
    stop_grace_s = 20.0

    @property
    def port(self) -> int:
        return self.settings.dagster_port

    @property
    def instance_dir(self) -> Path:
        return self.home / "instance"

    def env(self) -> dict[str, str]:
        return {
            "DAGSTER_HOME": str(self.instance_dir),
            # dbt asks its tracker and PyPI unless told not to; there is no network here.
            "DO_NOT_TRACK": "1",
            "DBT_SEND_ANONYMOUS_USAGE_STATS": "false",
        }

    def prepare(self) -> None:
        self.instance_dir.mkdir(parents=True, exist_ok=True)
        (self.instance_dir / "dagster.yaml").write_text(
            _INSTANCE_YAML.format(
                port=self.settings.pg_port,
                db=self.settings.dagster_database,
                artifacts=self.home / "storage",
                compute_logs=self.home / "compute_logs",
            )
        )
        self._create_database()
        parse_dbt_project(self.settings, self.env(), component=self.name)

    def _create_database(self) -> None:
        s, db = self.settings, self.settings.dagster_database
        try:
            with psycopg.connect(s.pg_dsn, autocommit=True, connect_timeout=5) as conn:
                if conn.execute("select 1 from pg_database where datname = %s", (db,)).fetchone() is None:
                    conn.execute(f'create database "{db}"')
        except psycopg.Error as e:
            raise StackError(self.name, f"cannot create its database {db!r} in PostgreSQL: {e}") from e

    def children(self) -> list[list[str]]:
        bin_dir = Path(sys.executable).parent
        workspace = str(REPO_ROOT / "workspace.yaml")
        return [
            [str(bin_dir / "dagster-webserver"), "-h", "127.0.0.1", "-p", str(self.port), "-w", workspace],
            [str(bin_dir / "dagster-daemon"), "run", "-w", workspace],
        ]

    def probe(self) -> bool:
        # /server_info answers once the webserver has loaded; the code location loads beside it.
        return http_ok(f"http://127.0.0.1:{self.port}/server_info")
