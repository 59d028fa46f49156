"""The stores' hosts are settings: what TALLY_*_HOST(S) say is what every client is given."""

import pytest
from pydantic import ValidationError

from tally.settings import Settings
from tally.storage import raw_events

HOSTS = {
    "TALLY_KAFKA_HOST": "kafka-bootstrap.kafka.svc",
    "TALLY_PG_HOST": "postgres.tally.svc",
    # Addresses, not names: the driver resolves its contact points when the client is built.
    "TALLY_CASSANDRA_HOSTS": "10.1.0.1, 10.1.0.2",
    "TALLY_CASSANDRA_LOCAL_DC": "dc-east",
    "TALLY_METRICS_HOST": "0.0.0.0",
}


@pytest.fixture
def settings(monkeypatch) -> Settings:
    for name, value in HOSTS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("TALLY_KAFKA_PORT", "9094")
    monkeypatch.setenv("TALLY_PG_PORT", "5432")
    return Settings(_env_file=None)


def test_defaults_are_the_local_stacks_loopback():
    s = Settings(_env_file=None)
    assert s.kafka_bootstrap == f"127.0.0.1:{s.kafka_port}"
    assert s.pg_dsn.startswith(f"host=127.0.0.1 port={s.pg_port} ")
    assert s.cassandra_hosts == ["127.0.0.1"] and s.cassandra_local_dc == "datacenter1"
    assert s.metrics_host == "127.0.0.1"


def test_hosts_reach_the_kafka_bootstrap_and_the_pg_dsn(settings):
    assert settings.kafka_bootstrap == "kafka-bootstrap.kafka.svc:9094"
    assert settings.pg_dsn.startswith("host=postgres.tally.svc port=5432 ")
    assert settings.metrics_host == "0.0.0.0"


def test_cassandra_hosts_are_a_comma_separated_list(settings):
    assert settings.cassandra_hosts == ["10.1.0.1", "10.1.0.2"]
    assert Settings(_env_file=None, cassandra_hosts="a,b").cassandra_hosts == ["a", "b"]
    with pytest.raises(ValidationError, match="cassandra_hosts"):
        Settings(_env_file=None, cassandra_hosts=" , ")


def test_the_cassandra_driver_gets_the_contact_points_and_dc(settings):
    cluster = raw_events.cluster(settings)  # builds the client only: nothing is contacted until connect()
    try:
        assert cluster.contact_points == ["10.1.0.1", "10.1.0.2"]
        assert cluster.port == settings.cassandra_port
        # Set on the default execution profile, which every statement uses unless given another.
        assert cluster.profile_manager.default.load_balancing_policy.local_dc == "dc-east"
    finally:
        cluster.shutdown()


def test_processes_started_with_as_env_read_the_same_hosts(settings, monkeypatch):
    # The local stack starts Tally's processes with as_env(): a list must go back as "a,b".
    env = settings.as_env()
    assert env["TALLY_CASSANDRA_HOSTS"] == "10.1.0.1,10.1.0.2"
    for name in HOSTS:
        monkeypatch.setenv(name, env[name])
    again = Settings(_env_file=None)
    assert (again.kafka_bootstrap, again.pg_dsn, again.cassandra_hosts) == (
        settings.kafka_bootstrap,
        settings.pg_dsn,
        settings.cassandra_hosts,
    )
