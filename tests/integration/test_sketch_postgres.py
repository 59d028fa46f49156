"""Sketches written by Python are the PostgreSQL `hll` extension's own bytes, so SQL can merge them."""

import itertools

import psycopg
import pytest

from tally.sketch import Hll, hash_user

EMPTY, EXPLICIT, SPARSE, FULL = 1, 2, 3, 4

# Sketches of each kind, over slices of one pool of users so that pairs overlap: (users, kind written).
SKETCHES = {
    "empty": (0, EMPTY),
    "explicit": (60, EXPLICIT),
    "explicit-near-cutoff": (120, EXPLICIT),
    "sparse": (400, SPARSE),
    "sparse-near-full": (700, SPARSE),
    "full": (3_000, FULL),
}
POOL = [f"user-{i}" for i in range(5_000)]


def users_of(name: str, side: int) -> list[str]:
    n = SKETCHES[name][0]
    start = side * n // 2  # the second side overlaps the first by half
    return POOL[start : start + n]


def tally_sketch(users: list[str]) -> Hll:
    h = Hll()
    h.add_hashes([hash_user(u) for u in users])
    return h


def kind(data: bytes) -> int:
    return data[0] & 0x0F


@pytest.fixture(scope="module")
def conn(stack):
    with psycopg.connect(stack.pg_dsn, autocommit=True) as c:
        if c.execute("select 1 from pg_extension where extname = 'hll'").fetchone() is None:
            pytest.skip("the hll extension is not installed in this PostgreSQL")
        yield c


def sql_bytes(conn, query: str, params) -> bytes:
    """The extension's value of `query`: hll has no cast to bytea, so it comes back as \\x-text."""
    return bytes.fromhex(conn.execute(f"select ({query})::text", params).fetchone()[0][2:])


def extension_sketch(conn, users: list[str]) -> bytes:
    query = "select coalesce(hll_add_agg(hll_hash_text(u)), hll_empty()) from unnest(%s::text[]) u"
    return sql_bytes(conn, query, (users,))


def extension_cardinality(conn, data: bytes) -> float:
    return conn.execute("select hll_cardinality(%s::bytea::hll)", (data,)).fetchone()[0]


def test_every_sketch_of_1_to_1000_users_has_the_extensions_bytes_and_cardinality(conn):
    # One window aggregate gives hll_add_agg over every prefix; Tally adds one user at a time,
    # the dataflow's small-batch path.
    rows = conn.execute(
        "select s::text, hll_cardinality(s) from ("
        "  select n, hll_add_agg(hll_hash_text(u)) over (order by n) s"
        "  from unnest(%s::text[]) with ordinality t(u, n)) prefixes order by n",
        (POOL[:1_000],),
    ).fetchall()
    ours = Hll()
    differing, kinds = [], set()
    for n, (user, (theirs, card)) in enumerate(zip(POOL[:1_000], rows, strict=True), start=1):
        ours.add(user)
        data = ours.to_bytes()
        kinds.add(kind(data))
        if data != bytes.fromhex(theirs[2:]) or ours.cardinality() != card:
            differing.append(n)
    assert differing == []
    assert kinds == {EXPLICIT, SPARSE, FULL}  # the range crosses both of the extension's cutoffs


@pytest.mark.parametrize("n", [0, 7, 160, 161, 1_200, 2_000, 5_000, 10_000, 30_000])
def test_python_sketch_has_the_extensions_bytes_and_cardinality(conn, n):
    users = [f"user-{i}" for i in range(n)]
    ours = tally_sketch(users)
    theirs = extension_sketch(conn, users)
    assert ours.to_bytes() == theirs
    assert ours.cardinality() == extension_cardinality(conn, theirs)


@pytest.mark.parametrize("name", SKETCHES)
def test_each_kind_the_extension_writes_reads_back_to_the_same_bytes_and_estimate(conn, name):
    theirs = extension_sketch(conn, users_of(name, 0))
    assert kind(theirs) == SKETCHES[name][1]
    back = Hll.from_bytes(theirs)
    assert back.to_bytes() == theirs
    assert back.cardinality() == extension_cardinality(conn, theirs)


@pytest.mark.parametrize(("a", "b"), itertools.product(SKETCHES, SKETCHES))
def test_python_and_extension_sketches_merge_to_hll_union_in_either_order(conn, a, b):
    ours = tally_sketch(users_of(a, 0))
    theirs = extension_sketch(conn, users_of(b, 1))
    assert ours.to_bytes() == extension_sketch(conn, users_of(a, 0))

    ours_then_theirs = tally_sketch(users_of(a, 0))
    ours_then_theirs.merge(Hll.from_bytes(theirs))
    theirs_then_ours = Hll.from_bytes(theirs)
    theirs_then_ours.merge(ours)
    for merged, first, second in (
        (ours_then_theirs, ours.to_bytes(), theirs),
        (theirs_then_ours, theirs, ours.to_bytes()),
    ):
        union = sql_bytes(conn, "select hll_union(%s::bytea::hll, %s::bytea::hll)", (first, second))
        assert merged.to_bytes() == union
        assert merged.cardinality() == extension_cardinality(conn, union)


@pytest.mark.parametrize(
    ("a", "b", "union_kind"),
    [
        pytest.param(range(0), range(0), EMPTY, id="empty-empty"),
        pytest.param(range(0), range(400), SPARSE, id="empty-sparse"),
        pytest.param(range(60), range(30, 90), EXPLICIT, id="explicit-explicit"),
        pytest.param(range(120), range(20, 140), EXPLICIT, id="explicit-explicit-240-hashes-140-distinct"),
        pytest.param(range(100), range(60, 160), EXPLICIT, id="explicit-explicit-160-distinct"),
        pytest.param(range(100), range(60, 161), SPARSE, id="explicit-explicit-161-distinct"),
        pytest.param(range(60), range(30, 430), SPARSE, id="explicit-sparse"),
        pytest.param(range(400), range(200, 600), SPARSE, id="sparse-sparse"),
        pytest.param(range(700), range(350, 1_050), FULL, id="sparse-sparse-past-639-registers"),
        pytest.param(range(60), range(30, 3_030), FULL, id="explicit-full"),
        pytest.param(range(400), range(200, 3_200), FULL, id="sparse-full"),
    ],
)
def test_a_union_changes_kind_where_the_extensions_union_does(conn, a, b, union_kind):
    a_users, b_users = POOL[a.start : a.stop], POOL[b.start : b.stop]
    a_bytes, b_bytes = extension_sketch(conn, a_users), extension_sketch(conn, b_users)
    for first, second, x, y in ((a_users, b_users, a_bytes, b_bytes), (b_users, a_users, b_bytes, a_bytes)):
        merged = tally_sketch(first)
        merged.merge(tally_sketch(second))
        union = sql_bytes(conn, "select hll_union_agg(s) from unnest(array[%s::bytea::hll, %s::bytea::hll]) s", (x, y))
        assert kind(union) == union_kind
        assert merged.to_bytes() == union


def test_minute_sketches_union_in_sql_to_the_hourly_unique_count(conn):
    minutes = []
    for m in range(60):
        h = Hll()
        h.add_hashes(hash_user(f"u{(m * 37 + k) % 900}") for k in range(50))  # overlapping users
        minutes.append(h.to_bytes())
    merged = Hll()
    for b in minutes:
        merged.merge(Hll.from_bytes(b))
    hourly = sql_bytes(conn, "select hll_union_agg(s::hll) from unnest(%s::bytea[]) s", (minutes,))
    assert merged.to_bytes() == hourly
    assert merged.cardinality() == extension_cardinality(conn, hourly)
