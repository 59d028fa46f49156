from hypothesis import given, settings
from hypothesis import strategies as st

from tally.sketch import EXPLICIT_MAX, STANDARD_ERROR, Hll, hash_user

user_sets = st.lists(st.integers(min_value=0, max_value=5000), max_size=400)


def sketch(users) -> Hll:
    h = Hll()
    h.add_hashes(hash_user(f"u{u}") for u in users)
    return h


def test_small_sets_are_counted_exactly():
    assert sketch(range(EXPLICIT_MAX)).cardinality() == EXPLICIT_MAX
    assert sketch([1, 1, 2, 2, 3]).cardinality() == 3


def test_large_sets_are_within_three_standard_errors():
    for n in (1_000, 20_000, 200_000):
        estimate = sketch(range(n)).cardinality()
        assert abs(estimate - n) / n < 3 * STANDARD_ERROR, (n, estimate)


@settings(max_examples=60, deadline=None)
@given(user_sets, user_sets, user_sets)
def test_merge_is_associative_commutative_and_equals_one_sketch_of_the_union(a, b, c):
    left = sketch(a)
    left.merge(sketch(b))
    left.merge(sketch(c))
    right = sketch(c)
    bc = sketch(b)
    bc.merge(sketch(a))
    right.merge(bc)
    whole = sketch(a + b + c)
    assert left.to_bytes() == right.to_bytes() == whole.to_bytes()


@settings(max_examples=40, deadline=None)
@given(user_sets)
def test_storage_format_round_trips(users):
    h = sketch(users)
    assert Hll.from_bytes(h.to_bytes()).to_bytes() == h.to_bytes()


@settings(max_examples=40, deadline=None)
@given(st.lists(user_sets, min_size=1, max_size=8))
def test_a_sketch_fed_in_small_batches_has_the_same_bytes_as_one_fed_at_once(batches):
    # Small updates set registers in Python, large ones with numpy: both must give the same bytes.
    piecewise = Hll()
    for batch in batches:
        piecewise.add_hashes([hash_user(f"u{u}") for u in batch])
    assert piecewise.to_bytes() == sketch([u for batch in batches for u in batch]).to_bytes()
