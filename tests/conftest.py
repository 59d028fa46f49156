"""Shared test settings.

Integration tests run their own stack: own state dir and ports shifted by 10,000, so a developer's
`make run` stack on the default ports is never touched by `make test`.
"""

from __future__ import annotations

import os

from tally.settings import REPO_ROOT

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
}
for key, value in TEST_ENV.items():
    os.environ.setdefault(key, value)
