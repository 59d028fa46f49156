"""Pure checks of the stack's config handling; no service is started."""

import os
import re
import subprocess
import sys

import pytest

from tally.settings import Settings
from tally.stack.runner import select, services
from tally.stack.service import StackError


def test_settings_come_from_env_with_the_tally_prefix(monkeypatch):
    monkeypatch.setenv("TALLY_KAFKA_PORT", "29092")
    monkeypatch.setenv("TALLY_KAFKA_PARTITIONS", "8")
    s = Settings()
    assert s.kafka_port == 29092 and s.kafka_partitions == 8
    assert s.kafka_bootstrap == "127.0.0.1:29092"


def test_every_template_is_filled_completely(tmp_path):
    s = Settings(state_dir=tmp_path, kafka_controller_port=0, cassandra_storage_port=0)
    kafka, cassandra = select(s, ["kafka", "cassandra"])
    # prepare() writes the configs; kafka's also formats storage, which needs Java: skip that part.
    (kafka.data_dir).mkdir(parents=True)
    (kafka.data_dir / "meta.properties").write_text("formatted")
    kafka.prepare()
    cassandra.prepare()
    prom = select(s, ["prometheus"])[0]
    prom.prepare()
    for path in (kafka.properties, cassandra.conf_dir / "cassandra.yaml", prom.config):
        text = path.read_text()
        # A "$name" left behind means a placeholder nobody filled (Prometheus' own {{ $labels }} aside).
        assert not re.search(r"(?<!\{\{ )\$[a-z_]+", text), path


def test_unknown_component_is_refused_by_name():
    with pytest.raises(StackError, match="kafak: unknown component"):
        select(Settings(), ["kafak"])


def test_components_have_distinct_ports_and_names():
    s = Settings()
    svcs = services(s)
    ports = [svc.port for svc in svcs] + [s.kafka_metrics_port, s.cassandra_metrics_port]
    ports += [s.dataflow_metrics_port + i for i in range(1, s.dataflow_processes)]
    assert len(set(ports)) == len(ports)
    assert [svc.name for svc in svcs] == [
        "cassandra",
        "kafka",
        "postgres",
        "prometheus",
        "postgres-exporter",
        "node-exporter",
        "api",
        "dataflow",
        "dagster",
    ]


def test_pid_file_naming_a_strangers_process_is_not_ours(tmp_path):
    svc = select(Settings(state_dir=tmp_path), ["prometheus"])[0]
    stranger = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        svc.pid_file.parent.mkdir(parents=True)
        svc.pid_file.write_text(str(stranger.pid))
        assert svc.pid() is None
        assert svc.stop() is False
        assert stranger.poll() is None, "stop() must never signal a process it did not start"
    finally:
        stranger.kill()
        stranger.wait()
    assert os.path.exists(svc.pid_file) is False


def test_whole_hours_come_from_hour_rows_and_the_edges_from_minutes():
    from datetime import UTC, datetime, timedelta, timezone

    from tally.storage.aggregates import AggregateQuery, sources

    def q(start, end, g):
        return AggregateQuery(start, end, g, ["count"], [], [], [])

    t = lambda h, m=0: datetime(2026, 11, 26, h, m, tzinfo=UTC)  # noqa: E731
    final = t(23)
    assert sources(q(t(0), t(6), "1h"), final) == [("rollup_1h", t(0), t(6))]
    assert sources(q(t(0, 30), t(6, 15), "1h"), final) == [
        ("rollup_1h", t(1), t(6)),
        ("rollup_1m", t(0, 30), t(1)),
        ("rollup_1m", t(6), t(6, 15)),
    ]
    assert sources(q(t(0, 30), t(1, 15), "1d"), final) == [("rollup_1m", t(0, 30), t(1, 15))]
    assert sources(q(t(0), t(6), "15m"), final) == [("rollup_1m", t(0), t(6))]
    # Hour rows exist only for hours that are final; the open ones are read from minutes.
    assert sources(q(t(0), t(6), "1h"), t(4, 20)) == [("rollup_1h", t(0), t(4)), ("rollup_1m", t(4), t(6))]
    assert sources(q(t(0), t(6), "1h"), None) == [("rollup_1m", t(0), t(6))]
    # Whole hours are UTC hours whatever the query's offset.
    india = timezone(timedelta(hours=5, minutes=30))
    assert sources(q(t(0, 30).astimezone(india), t(3).astimezone(india), "1h"), final)[0] == ("rollup_1h", t(1), t(3))
