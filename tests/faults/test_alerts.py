"""Faults caused on the live stack under load fire the alert they are for, within the rule's `for` plus
an evaluation interval (and a scrape), and the alert clears once the fault is gone. Minutes each:
opt-in with `make test-faults`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import pytest

from orchestration.defs.corrections.assets import late_event_corrections
from orchestration.defs.resources import TallyResource
from tally.stack import runner
from tally.storage import rollup_store
from tests.faults.test_kill_dataflow import dataflow_pids

pytestmark = pytest.mark.faults

EVALUATION_S = 15  # deploy/prometheus/prometheus.yml
SCRAPE_S = 5
TALLY = Path(sys.executable).parent / "tally"


def firing(settings, alertname: str) -> list[dict]:
    url = f"{settings.prometheus_base}/api/v1/alerts"
    with urllib.request.urlopen(url, timeout=10) as r:
        alerts = json.load(r)["data"]["alerts"]
    return [a["labels"] for a in alerts if a["labels"]["alertname"] == alertname and a["state"] == "firing"]


def query(settings, promql: str) -> list[dict]:
    url = f"{settings.prometheus_base}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.load(r)["data"]["result"]


def wait_alert(settings, alertname: str, match: dict, fire: bool, timeout_s: float) -> float:
    """Seconds until `alertname` fires (fire=True) or stops firing for labels including `match`."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout_s:
        hits = [a for a in firing(settings, alertname) if all(a.get(k) == v for k, v in match.items())]
        if bool(hits) == fire:
            return time.monotonic() - t0
        time.sleep(1)
    state = "fire" if fire else "clear"
    raise AssertionError(f"{alertname} {match} did not {state} within {timeout_s:.0f} s: {firing(settings, alertname)}")


def rule_for_s(settings, alertname: str) -> float:
    url = f"{settings.prometheus_base}/api/v1/rules?type=alert"
    with urllib.request.urlopen(url, timeout=10) as r:
        groups = json.load(r)["data"]["groups"]
    (rule,) = [r for g in groups for r in g["rules"] if r["name"] == alertname]
    return float(rule["duration"])


@pytest.fixture
def load(stack):
    """`tally send` at 2,000 events/s while the test runs."""
    sender = subprocess.Popen([str(TALLY), "send", "--rate", "2000", "--duration", "900", "--batch", "200"])
    deadline = time.monotonic() + 90
    while not query(stack, "tally:events_out:rate1m > 0"):
        assert time.monotonic() < deadline, "the load is not counted"
        time.sleep(2)
    try:
        yield
    finally:
        sender.terminate()
        sender.wait(10)


@pytest.mark.parametrize(("component", "job"), [("dataflow", "tally-dataflow"), ("cassandra", "cassandra")])
def test_a_stopped_component_fires_component_down(stack, load, component, job):
    assert not firing(stack, "TallyComponentDown")
    runner.down(stack, [component])
    try:
        took = wait_alert(stack, "TallyComponentDown", {"job": job}, True, 180)
    finally:
        assert all(r.ok for r in runner.up(stack, [component]))
    print(f"TallyComponentDown fired {took:.0f} s after {component} stopped")
    assert took <= rule_for_s(stack, "TallyComponentDown") + EVALUATION_S + SCRAPE_S + 10
    cleared = wait_alert(stack, "TallyComponentDown", {"job": job}, False, 180)
    print(f"... and cleared {cleared:.0f} s after it was up again")


def test_a_paused_dataflow_process_fires_watermark_stalled_for_its_partitions(stack, load):
    """SIGSTOP: the process is alive, holds its partitions and answers nothing, as a stuck flush does."""
    pid = dataflow_pids(stack)[1]
    port = stack.dataflow_metrics_port + 1
    partitions = {
        r["metric"]["partition"]
        for r in query(stack, f'tally_dataflow_watermark_seconds{{instance="127.0.0.1:{port}"}}')
    }
    assert partitions
    os.kill(pid, signal.SIGSTOP)
    try:
        took = wait_alert(stack, "TallyWatermarkStalled", {}, True, 480)
        stalled = {a["partition"] for a in firing(stack, "TallyWatermarkStalled")}
    finally:
        os.kill(pid, signal.SIGCONT)
    print(f"TallyWatermarkStalled fired {took:.0f} s after the pause, for partitions {sorted(stalled)}")
    assert stalled <= partitions
    # The rule looks 3 minutes back for a commit, then waits its `for`.
    assert took <= 180 + rule_for_s(stack, "TallyWatermarkStalled") + EVALUATION_S + SCRAPE_S + 20
    cleared = wait_alert(stack, "TallyWatermarkStalled", {}, False, 180)
    print(f"... and cleared {cleared:.0f} s after SIGCONT")


def test_a_reconciliation_mismatch_fires_its_alert(stack, load):
    """A minute row counting 5 events nobody sent, in a closed hour: the hourly correction's
    reconciliation finds it, and the alert follows from what it recorded (operation_runs)."""
    hour = datetime(2026, 11, 2, 5, tzinfo=UTC)
    planted = f"t{int(time.time())}.planted"

    def correct() -> None:
        with dg.DagsterInstance.ephemeral() as instance:
            dg.materialize(
                [late_event_corrections],
                partition_key=hour.strftime("%Y-%m-%d-%H:%M"),
                instance=instance,
                resources={"tally": TallyResource()},
                raise_on_error=False,
            )

    with rollup_store.connect(stack) as conn:
        conn.execute(
            "insert into rollup_1m (bucket, event_type, source, kafka_partition, event_count, value_count,"
            " value_sum, users, final) values (%s, %s, 'web', 0, 5, 0, 0, ''::bytea, true)",
            (hour + timedelta(minutes=7), planted),
        )
    try:
        correct()
        took = wait_alert(stack, "TallyReconciliationMismatch", {}, True, 180)
    finally:
        with rollup_store.connect(stack) as conn:
            conn.execute("delete from rollup_1m where event_type = %s", (planted,))
    print(f"TallyReconciliationMismatch fired {took:.0f} s after the run")
    assert took <= rule_for_s(stack, "TallyReconciliationMismatch") + EVALUATION_S + SCRAPE_S + 10
    correct()
    wait_alert(stack, "TallyReconciliationMismatch", {}, False, 120)
