"""Shared test settings, and the real stack started once per session (same code as `tally stack up`).

Integration tests run their own stack: own state dir and ports shifted by 10,000, so a developer's
`make run` stack on the default ports is never touched by `make test`.
"""

from __future__ import annotations

import os

import pytest

from tally.settings import REPO_ROOT, Settings
from tally.stack import runner

TEST_ENV = {
    "TALLY_STATE_DIR": str(REPO_ROOT / ".tally-test"),
    "TALLY_KAFKA_PORT": "19092",
    "TALLY_KAFKA_CONTROLLER_PORT": "19093",
    "TALLY_CASSANDRA_PORT": "19042",
    "TALLY_CASSANDRA_STORAGE_PORT": "17000",
    # Tests hold little data; a smaller heap leaves memory for the rest of the suite.
    "TALLY_CASSANDRA_HEAP": "1g",
    "TALLY_KAFKA_HEAP": "512m",
    "TALLY_PG_PORT": "15433",
    "TALLY_PROMETHEUS_PORT": "19090",
    "TALLY_API_PORT": "18000",
    "TALLY_DATAFLOW_METRICS_PORT": "19101",
    "TALLY_KAFKA_METRICS_PORT": "19404",
    "TALLY_CASSANDRA_METRICS_PORT": "19405",
    "TALLY_POSTGRES_EXPORTER_PORT": "19187",
    "TALLY_NODE_EXPORTER_PORT": "19100",
    "TALLY_DAGSTER_PORT": "13000",
    "TALLY_DAGSTER_CODE_SERVER_PORT": "13001",
    # The tests own the stack's tables: no schedule may fold or rebuild them in the middle of a check
    # (the hourly correction at ten past would fold a kill run's late events under its ledger).
    "TALLY_DAGSTER_SCHEDULES": "false",
}
for key, value in TEST_ENV.items():
    os.environ.setdefault(key, value)

# The fault runs' checks live in a helper module: without this their failures read "AssertionError"
# and nothing else (as one CI run did), with it pytest shows both sides.
pytest.register_assert_rewrite("tests.faults.ledger")


def pytest_sessionstart(session) -> None:
    """The dbt project parsed (target/manifest.json, ~5 s), as `tally up` does before Dagster and the
    API start: Dagster's dbt assets read the manifest when their module is imported, and tests
    importing them are collected before any fixture runs."""
    from tally.stack.dbt import parse_dbt_project

    parse_dbt_project(Settings())


@pytest.fixture(scope="session")
def settings() -> Settings:
    return Settings()


@pytest.fixture(scope="session")
def stack(settings: Settings):
    results = runner.up(settings)
    failed = [r.message for r in results if not r.ok]
    assert not failed, "the test stack did not come up:\n" + "\n".join(failed)
    yield settings
    # Leave no daemons behind unless asked to (a kept stack makes the next run start in seconds).
    if os.environ.get("TALLY_TEST_KEEP_STACK") != "1":
        runner.down(settings)


# Per module, not per session: its engine is a process of the stack's state dir, and tests that
# check `down` leaves nothing of the stack running must not find it.
@pytest.fixture(scope="module")
def timescaledb_dsn(settings: Settings):
    """DSN of a TimescaleDB engine: TALLY_TIMESCALEDB_DSN if set (a real server), else TimescaleDB-in-PGlite."""
    if dsn := os.environ.get("TALLY_TIMESCALEDB_DSN"):
        yield dsn
        return
    from tally.stack.timescaledb_lite import TimescaleLite

    engine = TimescaleLite(settings)
    engine.up()
    yield engine.dsn
    engine.stop()
