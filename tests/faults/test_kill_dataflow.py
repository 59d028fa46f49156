"""kill -9 of dataflow processes, again and again, while a million events (plus 5 % copies, 1 %
of them half an hour late) go through: afterwards every metric of every minute and hour row equals
what was accepted, every late event is in the ledger, Cassandra holds each event once and the
reconciliation finds nothing. About 2 min; TALLY_FAULT_EVENTS changes the number of events.
"""

from __future__ import annotations

import os
import random
import signal
import time

import pytest

from tally.stack import runner
from tests.faults.ledger import Run
from tests.faults.pipeline import own_pipeline

EVENTS = int(os.environ.get("TALLY_FAULT_EVENTS", "1000000"))


@pytest.fixture
def pipeline(stack):
    # Behind from the first unread message, flushing every 0.5 s or 20,000 events and committing
    # every 5 s or 8 flushes: kills land after flushes that wrote raw events and no rows
    # (dataflows.aggregate), whose events the restarted process must aggregate again, exactly once.
    overrides = {
        "backlog_messages": 1,
        "backlog_flush_interval_s": 0.5,
        "backlog_commit_interval_s": 5.0,
        "flush_max_events": 20_000,
    }
    with own_pipeline(stack, "kill", **overrides) as settings:
        yield settings


def dataflow_pids(settings) -> list[int]:
    return [int(p) for p in (settings.state_dir / "dataflow" / "children.pids").read_text().split()]


def test_kill_9_during_a_million_events_loses_and_doubles_nothing(pipeline):
    # ~40 s of sending: kills land at many different moments. Event times within 10 s: a flush of
    # the backlog a restarted process reads holds thousands of events of one (type, second), which
    # raw storage cuts into several pieces, so a replay cut elsewhere would store events twice.
    run = Run(pipeline, EVENTS, rate=25_000, spread_s=10, late=0.01)
    run.open()
    rng = random.Random(7)
    run.start_sending()
    kills = 0
    while run.sending() or kills < 5:
        time.sleep(rng.uniform(2, 8))  # a flush is written every second: some kills land inside one
        try:
            os.kill(rng.choice(dataflow_pids(pipeline)), signal.SIGKILL)
            kills += 1
        except (ProcessLookupError, IndexError):
            pass  # between a death and its restart
    run.join()
    run.close()
    assert run.refused == 0  # only the dataflow was killed: the API accepted everything
    figures = run.check_everything()
    assert figures["accepted"] == EVENTS + run.framing
    print(f"\nkill -9: {EVENTS:,} events + {run.copies:,} copies, {kills} kills: {figures}")


def test_kill_9_while_a_backlog_drains_loses_and_doubles_nothing(pipeline):
    # The dataflow stopped while a million events are accepted, then killed again and again while
    # it drains them: between its commits, every 5 s, it has flushed raw events whose rows only
    # the next commit would have written.
    run = Run(pipeline, EVENTS, rate=10**9, spread_s=10, late=0.01)
    run.open()
    runner.down(pipeline, ["dataflow"])
    run.start_sending()
    run.join()
    assert all(r.ok for r in runner.up(pipeline, ["dataflow"]))
    rng = random.Random(8)
    kills = 0
    while kills < 6:
        time.sleep(rng.uniform(2, 5))
        try:
            os.kill(rng.choice(dataflow_pids(pipeline)), signal.SIGKILL)
            kills += 1
        except (ProcessLookupError, IndexError):
            pass
    run.close()
    assert run.refused == 0
    figures = run.check_everything()
    assert figures["accepted"] == EVENTS + run.framing
    print(f"\nkill -9 draining a backlog: {EVENTS:,} events + {run.copies:,} copies, {kills} kills: {figures}")
