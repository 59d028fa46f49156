"""Sketches written by Python are the PostgreSQL `hll` extension's own bytes, so SQL can merge them."""

import psycopg
import pytest

from tally.sketch import Hll, hash_user


@pytest.fixture
def conn(stack):
    with psycopg.connect(stack.pg_dsn, autocommit=True) as c:
        if c.execute("select 1 from pg_extension where extname = 'hll'").fetchone() is None:
            pytest.skip("the hll extension is not installed in this PostgreSQL")
        yield c


@pytest.mark.parametrize("n", [0, 7, 160, 1_000, 30_000])
def test_python_sketch_has_the_extensions_bytes_and_cardinality(conn, n):
    users = [f"user-{i}" for i in range(n)]
    ours = Hll()
    ours.add_hashes(hash_user(u) for u in users)
    theirs, card = conn.execute(
        "select coalesce(hll_add_agg(hll_hash_text(u)), hll_empty())::text,"
        " hll_cardinality(coalesce(hll_add_agg(hll_hash_text(u)), hll_empty()))"
        " from unnest(%s::text[]) u",
        (users,),
    ).fetchone()
    assert bytes.fromhex(theirs[2:]) == ours.to_bytes()
    assert conn.execute("select hll_cardinality(%s::bytea::hll)", (ours.to_bytes(),)).fetchone()[0] == card
    assert ours.cardinality() == pytest.approx(card)


def test_minute_sketches_union_in_sql_to_the_hourly_unique_count(conn):
    minutes = []
    for m in range(60):
        h = Hll()
        h.add_hashes(hash_user(f"u{(m * 37 + k) % 900}") for k in range(50))  # overlapping users
        minutes.append(h.to_bytes())
    merged = Hll()
    for b in minutes:
        merged.merge(Hll.from_bytes(b))
    sql = "select hll_cardinality(hll_union_agg(s::hll)) from unnest(%s::bytea[]) s"
    assert conn.execute(sql, (minutes,)).fetchone()[0] == pytest.approx(merged.cardinality())
