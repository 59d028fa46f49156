import uuid

import pytest
from cassandra.cluster import Cluster
from cassandra.policies import DCAwareRoundRobinPolicy


@pytest.fixture(scope="module")
def session(stack):
    cluster = Cluster(
        ["127.0.0.1"],
        port=stack.cassandra_port,
        protocol_version=5,
        load_balancing_policy=DCAwareRoundRobinPolicy(local_dc="datacenter1"),
    )
    yield cluster.connect(stack.cassandra_keyspace)
    cluster.shutdown()


def test_keyspace_from_the_project_schema_exists(stack, session):
    row = session.execute(
        "select replication from system_schema.keyspaces where keyspace_name = %s", (stack.cassandra_keyspace,)
    ).one()
    assert row is not None
    assert row.replication["class"].endswith("SimpleStrategy")


def test_rows_written_with_prepared_statements_read_back(session):
    table = f"t_{uuid.uuid4().hex[:8]}"
    session.execute(f"create table {table} (bucket text, id text, n int, primary key (bucket, id))", timeout=60)
    try:
        insert = session.prepare(f"insert into {table} (bucket, id, n) values (?, ?, ?)")
        for i in range(500):
            session.execute(insert, (f"b{i % 5}", f"id{i:04d}", i))
        # Writing the same key again overwrites: the idempotence raw events rely on.
        session.execute(insert, ("b0", "id0000", 0))
        select = session.prepare(f"select id, n from {table} where bucket = ?")
        rows = list(session.execute(select, ("b3",)))
        assert [r.n for r in rows] == list(range(3, 500, 5))
        assert session.execute(f"select count(*) from {table}").one()[0] == 500
    finally:
        session.execute(f"drop table {table}", timeout=60)
