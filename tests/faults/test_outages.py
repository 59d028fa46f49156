"""60 s PostgreSQL and Cassandra outages and a Kafka broker restart in the middle of a run: the API accepts
what it can, the dataflow holds back without crashing, and afterwards every metric of every minute and
hour row is exact. Minutes each: opt-in with `make test-faults`.
"""

from __future__ import annotations

import time

import httpx
import pytest

from tally.stack import runner
from tests.faults.ledger import Run
from tests.faults.pipeline import own_pipeline
from tests.faults.test_kill_dataflow import dataflow_pids

pytestmark = pytest.mark.faults


@pytest.fixture
def pipeline(stack):
    """A fresh one for each run: a run closes its hours by moving event time two hours on, and a
    second run in the same hour would then be all late."""
    with own_pipeline(stack, "outages") as settings:
        yield settings


def outage(stack, run: Run, service: str, seconds: float) -> None:
    """Stop the stack's `service` 15 s into the run, start it again `seconds` later, wait for the run
    to end and close its hours."""
    run.open()
    run.start_sending()
    time.sleep(15)
    runner.down(stack, [service])
    time.sleep(seconds)
    up = runner.up(stack, [service])
    assert all(r.ok for r in up), up
    run.join()
    run.close()


def test_a_60_s_postgresql_outage_holds_the_dataflow_back_and_loses_nothing(stack, pipeline):
    run = Run(pipeline, 600_000, rate=6_000)  # ~100 s of sending, the outage in the middle
    pids = sorted(dataflow_pids(pipeline))
    outage(stack, run, "postgres", 60)
    assert run.refused == 0  # ingest does not need PostgreSQL
    figures = run.check_everything()
    assert sorted(dataflow_pids(pipeline)) == pids  # it waited: no crash, no restart loop
    print(f"\nPostgreSQL down 60 s: {figures}")


def test_a_broker_restart_refuses_some_and_loses_none_of_the_accepted(stack, pipeline):
    run = Run(pipeline, 400_000, rate=6_000)
    outage(stack, run, "kafka", 10)
    figures = run.check_everything()
    assert figures["accepted"] == 400_000 + run.framing  # every body got through in the end, each counted once
    r = httpx.post(f"http://127.0.0.1:{pipeline.api_port}/api/events", json=[], timeout=30, headers=run.auth)
    assert r.status_code in (202, 400, 422)  # the API is answering again
    print(f"\nKafka broker restarted: {figures}")


def test_a_60_s_cassandra_outage_holds_the_dataflow_back_and_loses_nothing(stack, pipeline):
    run = Run(pipeline, 600_000, rate=6_000)
    pids = sorted(dataflow_pids(pipeline))
    outage(stack, run, "cassandra", 60)
    assert run.refused == 0  # ingest does not need Cassandra
    figures = run.check_everything()
    assert sorted(dataflow_pids(pipeline)) == pids
    print(f"\nCassandra down 60 s: {figures}")
