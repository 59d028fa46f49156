import psycopg
import pytest


@pytest.fixture
def conn(stack):
    with psycopg.connect(stack.pg_dsn, autocommit=True) as c:
        yield c


def test_project_database_answers_on_the_stacks_own_port(stack, conn):
    assert conn.info.port == stack.pg_port
    version = conn.execute("show server_version_num").fetchone()[0]
    assert 150000 <= int(version) < 160000


def test_rows_written_and_upserted_read_back(conn):
    conn.execute("create temporary table t (k text primary key, n bigint not null)")
    with conn.cursor() as cur:
        cur.executemany("insert into t values (%s, %s)", [(f"k{i}", i) for i in range(1000)])
        # Overwrite, never increment: the rule every rollup write follows.
        cur.executemany(
            "insert into t values (%s, %s) on conflict (k) do update set n = excluded.n",
            [(f"k{i}", i * 2) for i in range(500)],
        )
    expected_sum = sum(range(500)) * 2 + sum(range(500, 1000))
    assert conn.execute("select count(*), sum(n) from t").fetchone() == (1000, expected_sum)


def test_extensions_available_here_are_installed(conn):
    available = {r[0] for r in conn.execute("select name from pg_available_extensions")}
    installed = {r[0] for r in conn.execute("select extname from pg_extension")}
    for ext in ("timescaledb", "hll"):
        assert (ext in installed) == (ext in available), ext
