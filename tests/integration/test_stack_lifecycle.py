"""`tally stack` as a user runs it: idempotent up, honest status, down that leaves nothing behind."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

from tally.stack import runner
from tally.stack.service import pid_alive

NAMES = sorted(
    ["api", "cassandra", "dagster", "dataflow", "kafka", "node-exporter", "postgres", "postgres-exporter", "prometheus"]
)
# The JMX exporters run inside Kafka's and Cassandra's JVMs: listed, but not started on their own.
AGENTS = ["cassandra-metrics", "kafka-metrics"]


def tally(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "tally.cli", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=600,
    )


def status_json(env: dict | None = None) -> tuple[int, dict]:
    r = tally("status", "--json", env=env)
    return r.returncode, {c["name"]: c for c in json.loads(r.stdout)["components"]}


def test_status_json_lists_every_component_up_with_pid_and_port(stack):
    code, comps = status_json()
    assert code == 0
    assert sorted(comps) == sorted(NAMES + AGENTS)
    for c in comps.values():
        assert c["status"] == "up" and pid_alive(c["pid"])
    assert comps["kafka-metrics"]["pid"] == comps["kafka"]["pid"] and comps["kafka-metrics"]["within"] == "kafka"
    assert comps["cassandra-metrics"]["port"] == stack.cassandra_metrics_port
    assert comps["postgres-exporter"]["port"] == stack.postgres_exporter_port
    assert comps["kafka"]["port"] == stack.kafka_port
    assert comps["postgres"]["port"] == stack.pg_port
    # Dagster's code server, webserver and daemon, under one supervisor, on the port its setting names.
    assert comps["dagster"]["port"] == stack.dagster_port and len(comps["dagster"]["pids"]) == 3


def test_second_up_is_a_no_op(stack):
    _, before = status_json()
    r = tally("stack", "up")
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("already up") == len(NAMES)
    _, after = status_json()
    assert {n: c["pid"] for n, c in after.items()} == {n: c["pid"] for n, c in before.items()}


def test_killed_component_is_reported_down_and_up_restarts_it(stack):
    _, comps = status_json()
    pid = comps["prometheus"]["pid"]
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    code, comps = status_json()
    assert code == 1
    assert comps["prometheus"]["status"] == "down"
    assert comps["kafka"]["status"] == "up"
    r = tally("stack", "up", "prometheus")
    assert r.returncode == 0, r.stdout + r.stderr
    code, comps = status_json()
    assert code == 0 and comps["prometheus"]["pid"] != pid


def test_port_taken_by_a_stranger_names_the_component_and_the_setting(stack, tmp_path):
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        r = tally(
            "stack",
            "up",
            "prometheus",
            env={"TALLY_STATE_DIR": str(tmp_path), "TALLY_PROMETHEUS_PORT": str(port)},
        )
    assert r.returncode == 1
    assert "prometheus" in r.stdout and f"port {port}" in r.stdout and "TALLY_PROMETHEUS_PORT" in r.stdout
    code, comps = status_json(env={"TALLY_STATE_DIR": str(tmp_path), "TALLY_PROMETHEUS_PORT": str(port)})
    assert code == 1 and comps["prometheus"]["status"] == "down"


def test_down_stops_every_process_of_ours_and_keeps_data_then_up_restores(stack):
    marker_dir = stack.state_dir / "postgres" / "data"
    r = tally("stack", "down")
    assert r.returncode == 0, r.stderr
    assert runner.our_processes(stack) == []
    code, comps = status_json()
    assert code == 1 and all(c["status"] == "down" for c in comps.values())
    assert (marker_dir / "PG_VERSION").exists(), "down without --purge must keep data"
    r = tally("stack", "up")
    assert r.returncode == 0, r.stdout + r.stderr
    assert status_json()[0] == 0


def test_failed_download_names_the_component_and_the_reason(tmp_path):
    import shutil

    deploy = tmp_path / "deploy"
    shutil.copytree(stack_deploy_dir(), deploy)
    pom = deploy / "local" / "pom.xml"
    pom.write_text(pom.read_text().replace("<kafka.version>", "<kafka.version>0.0.0-no-such-release"))
    r = tally(
        "stack",
        "up",
        "kafka",
        env={"TALLY_STATE_DIR": str(tmp_path / "state"), "TALLY_DEPLOY_DIR": str(deploy), "TALLY_KAFKA_PORT": "29092"},
    )
    assert r.returncode == 1
    assert "kafka" in r.stdout and "Maven could not resolve the jars" in r.stdout


def stack_deploy_dir():
    from tally.settings import Settings

    return Settings().deploy_dir


def test_supervisor_restarts_a_killed_dataflow_process_and_status_lists_every_pid(stack):
    _, comps = status_json()
    pids = comps["dataflow"]["pids"]
    assert len(pids) == stack.dataflow_processes and all(pid_alive(p) for p in pids)
    assert len(comps["api"]["pids"]) == 1  # uvicorn's master; it runs the workers
    os.kill(pids[0], signal.SIGKILL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        code, comps = status_json()
        now = comps["dataflow"].get("pids", [])
        if code == 0 and len(now) == stack.dataflow_processes and pids[0] not in now:
            break
        time.sleep(0.5)
    else:
        raise AssertionError(f"dataflow process {pids[0]} was not replaced: {comps['dataflow']}")


def test_status_shows_the_pipelines_figures_and_alerts_from_prometheus(stack):
    r = tally("status", "--json")
    out = json.loads(r.stdout)
    assert set(out["figures"]) == {
        "events_in_per_s",
        "events_counted_per_s",
        "consumer_lag_messages",
        "freshness_s",
        "watermark_lag_s",
        "alerts_firing",
    }
    assert out["figures"]["alerts_firing"] == len(out["alerts"])  # counted from the list printed with it
    assert all(a["name"] and a["severity"] for a in out["alerts"])
    text = tally("status").stdout
    assert "pipeline (Prometheus, last minute)" in text and "consumer lag, worst partition" in text
    # Prometheus down: the components are still listed, and the figures say why they are missing.
    r = tally("status", "--json", env={"TALLY_PROMETHEUS_URL": "http://127.0.0.1:9"})
    out = json.loads(r.stdout)
    assert out["components"] and "did not answer" in out["figures_error"]
