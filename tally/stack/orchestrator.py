"""Dagster in the local stack: a code server (Tally's definitions, loaded once), the webserver (the UI,
port TALLY_DAGSTER_PORT) and the daemon (schedules, sensors, the run queue), under one supervisor like
the API, with the instance kept in the stack's PostgreSQL (database `dagster`), so runs, checks and
sensor cursors survive a restart.

Dagster only observes and refines what the stream writes; nothing in ingest or queries waits for
it, so a failed or stopped Dagster leaves the API and the dataflow as they were.
"""

from __future__ import annotations

import json
import sys
import urllib.request
from pathlib import Path

import psycopg

from tally.settings import REPO_ROOT
from tally.stack.apps import Supervised
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
    # Runs wait seconds for their turn either way; polling the queue less often saves the daemon CPU.
    dequeue_interval_seconds: 10
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
        self.workspace_file.write_text(
            "# Written by `tally up`: the webserver and the daemon ask the code server of this stack.\n"
            "load_from:\n  - grpc_server:\n      host: 127.0.0.1\n"
            f"      port: {self.settings.dagster_code_server_port}\n      location_name: tally\n"
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

    @property
    def workspace_file(self) -> Path:
        return self.home / "workspace.yaml"

    def children(self) -> list[list[str]]:
        # One code server that the webserver and the daemon both ask. Left to themselves (the repo's
        # workspace.yaml, as `dagster dev` uses it), each spawns its own, and the daemon replaces its
        # own every 60 s to pick up code changes: a definitions load a minute (~5 s of CPU), for ever.
        # The webserver's "Reload definitions" reloads this one.
        bin_dir, s = Path(sys.executable).parent, self.settings
        workspace = str(self.workspace_file)
        return [
            [str(bin_dir / "dagster"), "code-server", "start", "-h", "127.0.0.1", "-p", str(s.dagster_code_server_port),
             "-m", "orchestration.definitions", "-d", str(REPO_ROOT), "--location-name", "tally"],
            [str(bin_dir / "dagster-webserver"), "-h", "127.0.0.1", "-p", str(self.port), "-w", workspace],
            [str(bin_dir / "dagster-daemon"), "run", "-w", workspace],
        ]  # fmt: skip

    def probe(self) -> bool:
        # Up once the UI answers with Tally's code location loaded (a broken definition never is).
        return location_loaded(self.port)


def location_loaded(port: int) -> bool:
    """True once the Dagster UI on this port has Tally's code location loaded without error."""
    query = "{ workspaceOrError { ... on Workspace { locationEntries { name loadStatus"
    query += " locationOrLoadError { __typename } } } } }"
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/graphql",
        data=json.dumps({"query": query}).encode(),
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as r:
            entries = json.load(r)["data"]["workspaceOrError"]["locationEntries"]
    except Exception:
        return False
    loaded = {e["name"] for e in entries if e["loadStatus"] == "LOADED"}
    errors = {e["name"] for e in entries if (e["locationOrLoadError"] or {}).get("__typename") == "PythonError"}
    return "tally" in loaded - errors
