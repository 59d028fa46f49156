"""Starts the real services once per test session, with the same code as `tally stack up`."""

from __future__ import annotations

import os

import pytest

from tally.settings import Settings
from tally.stack import runner


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


@pytest.fixture(scope="session")
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
