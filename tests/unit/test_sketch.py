import math
import random
import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tally.sketch import EXPLICIT_MAX, LOG2M, SPARSE_MAX, STANDARD_ERROR, Hll, M, hash_user

EMPTY, EXPLICIT, SPARSE, FULL = 1, 2, 3, 4
HEADER_PARAMS = bytes([0x8B, 0x7F])  # regwidth 5, log2m 11; sparse on, explicit cutoff auto

user_sets = st.lists(st.integers(min_value=0, max_value=5000), max_size=400)


def sketch(users) -> Hll:
    h = Hll()
    h.add_hashes(hash_user(f"u{u}") for u in users)
    return h


def kind(h: Hll) -> int:
    return h.to_bytes()[0] & 0x0F


def hashed_into(index: int, rank: int) -> int:
    """A hash that sets register `index` to `rank` (its substream's lowest set bit is bit rank-1)."""
    unsigned = (1 << (LOG2M + rank - 1)) | index
    return unsigned - (1 << 64) if unsigned >= 1 << 63 else unsigned


def spread(n: int, registers: int, seed: int) -> list[int]:
    """n distinct hashes falling into the first `registers` registers, with random ranks."""
    rng = random.Random(seed)
    out = set()
    while len(out) < n:
        index = len(out) % registers
        substream = rng.getrandbits(64 - LOG2M) | 1 << rng.randrange(64 - LOG2M)
        unsigned = (substream << LOG2M) | index
        out.add(unsigned - (1 << 64) if unsigned >= 1 << 63 else unsigned)
    return list(out)


def test_small_sets_are_counted_exactly():
    assert sketch(range(EXPLICIT_MAX)).cardinality() == EXPLICIT_MAX
    assert sketch([1, 1, 2, 2, 3]).cardinality() == 3


def test_large_sets_are_within_three_standard_errors():
    for n in (1_000, 20_000, 200_000):
        estimate = sketch(range(n)).cardinality()
        assert abs(estimate - n) / n < 3 * STANDARD_ERROR, (n, estimate)


def test_hashes_are_kept_explicitly_up_to_160_and_registers_from_the_161st():
    h = sketch(range(EXPLICIT_MAX))
    assert kind(h) == EXPLICIT and len(h.to_bytes()) == 3 + 8 * EXPLICIT_MAX
    h.add_hashes([hash_user(f"u{u}") for u in range(EXPLICIT_MAX)])  # repeats do not promote
    assert kind(h) == EXPLICIT
    h.add(f"u{EXPLICIT_MAX}")
    assert kind(h) == SPARSE


def test_an_explicit_sketch_fed_the_same_users_over_and_over_stays_small_and_explicit():
    h = Hll()
    for _ in range(100):  # a cell's few users, seen in batch after batch
        h.add_hashes([hash_user(f"u{u}") for u in range(10)])
        assert len(h.explicit) <= 2 * EXPLICIT_MAX  # repeats are dropped as they pile up
    assert kind(h) == EXPLICIT and len(h.to_bytes()) == 3 + 8 * 10 and h.cardinality() == 10


def test_sparse_is_written_while_fewer_than_640_registers_are_filled():
    below = Hll()
    below.add_hashes(hashed_into(i, 1) for i in range(SPARSE_MAX))
    assert SPARSE_MAX == 639
    assert kind(below) == SPARSE and len(below.to_bytes()) == 3 + 2 * 639
    below.add_hashes([hashed_into(SPARSE_MAX, 1)])
    assert kind(below) == FULL and len(below.to_bytes()) == 3 + M * 5 // 8


def test_many_users_in_few_registers_stay_sparse():
    h = Hll()
    h.add_hashes(spread(20_000, registers=10, seed=1))
    assert kind(h) == SPARSE and len(h.to_bytes()) == 3 + 2 * 10


def test_sparse_bytes_list_each_filled_register_as_index_and_value_in_index_order():
    h = Hll()
    ranks = {i: 1 + i % 31 for i in range(0, 2 * (EXPLICIT_MAX + 1), 2)}
    h.add_hashes([hashed_into(i, r) for i, r in reversed(ranks.items())])
    entries = b"".join(struct.pack(">H", i << 5 | r) for i, r in sorted(ranks.items()))
    assert h.to_bytes() == bytes([0x13]) + HEADER_PARAMS + entries


def test_full_bytes_pack_each_register_in_five_bits_most_significant_first():
    values = [(i * 7) % 32 for i in range(M)]
    h = Hll()
    h.add_hashes([hashed_into(i, v) for i, v in enumerate(values) if v])
    bits = "".join(f"{v:05b}" for v in values)
    assert h.to_bytes() == bytes([0x14]) + HEADER_PARAMS + int(bits, 2).to_bytes(M * 5 // 8, "big")
    assert bytes(Hll.from_bytes(h.to_bytes()).registers) == bytes(values)


def test_full_bytes_with_few_filled_registers_are_rewritten_sparse_with_the_same_estimate():
    # The extension re-packs what it reads, so a FULL input with few registers comes back SPARSE.
    full = bytes([0x14]) + HEADER_PARAMS + bytes([0b00011_000]) + bytes(M * 5 // 8 - 1)
    h = Hll.from_bytes(full)
    assert h.to_bytes() == bytes([0x13]) + HEADER_PARAMS + struct.pack(">H", 0 << 5 | 3)
    assert Hll.from_bytes(h.to_bytes()).cardinality() == h.cardinality() == M * math.log(M / (M - 1))


def test_a_register_repeated_in_sparse_bytes_keeps_its_last_value():
    data = bytes([0x13]) + HEADER_PARAMS + struct.pack(">HHH", 5 << 5 | 3, 9 << 5 | 2, 5 << 5 | 1)
    h = Hll.from_bytes(data)
    assert h.registers[5] == 1 and h.registers[9] == 2
    assert h.to_bytes() == bytes([0x13]) + HEADER_PARAMS + struct.pack(">HH", 5 << 5 | 1, 9 << 5 | 2)


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(bytes([0x13]) + HEADER_PARAMS + b"\x00\xa3\x01", id="half-a-sparse-entry"),
        pytest.param(bytes([0x14]) + HEADER_PARAMS + bytes(M * 5 // 8 - 1), id="full-one-byte-short"),
        pytest.param(bytes([0x12]) + HEADER_PARAMS + struct.pack(">qq", 5, 5), id="explicit-repeated"),
        pytest.param(bytes([0x12]) + HEADER_PARAMS + b"\x00" * 7, id="explicit-part-of-a-hash"),
        pytest.param(bytes([0x11]) + HEADER_PARAMS + b"\x00", id="empty-with-a-body"),
        pytest.param(bytes([0x10]) + HEADER_PARAMS, id="undefined"),  # no Tally sketch is undefined
        pytest.param(bytes([0x13, 0x8B, 0x7E]), id="explicit-cutoff-not-auto"),
        pytest.param(bytes([0x13]), id="no-header"),
    ],
)
def test_bytes_the_extension_would_refuse_are_refused(data):
    with pytest.raises(ValueError):
        Hll.from_bytes(data)


sizes = st.tuples(st.integers(0, 2_500), st.sampled_from([1, 64, 700, M]), st.integers(0, 2**32))


@settings(max_examples=60, deadline=None)
@given(sizes)
def test_the_kind_written_follows_distinct_hashes_then_filled_registers(size):
    n, registers, seed = size
    hashes = spread(n, registers, seed)
    h = Hll()
    h.add_hashes(hashes)
    filled = len({x & (M - 1) for x in hashes if (x & (2**64 - 1)) >> LOG2M})
    expected = EMPTY if n == 0 else EXPLICIT if n <= EXPLICIT_MAX else SPARSE if filled <= SPARSE_MAX else FULL
    assert kind(h) == expected


@settings(max_examples=60, deadline=None)
@given(sizes)
def test_storage_format_round_trips_for_every_kind(size):
    h = Hll()
    h.add_hashes(spread(*size))
    back = Hll.from_bytes(h.to_bytes())
    assert back.to_bytes() == h.to_bytes()
    assert back.cardinality() == h.cardinality()


@settings(max_examples=60, deadline=None)
@given(sizes, sizes)
def test_a_merge_never_writes_a_smaller_kind_than_either_side(a_size, b_size):
    a, b = Hll(), Hll()
    a.add_hashes(spread(*a_size))
    b.add_hashes(spread(*b_size))
    before = max(kind(a), kind(b))
    a.merge(b)
    assert kind(a) >= before


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
@given(st.lists(user_sets, min_size=1, max_size=8))
def test_a_sketch_fed_in_small_batches_has_the_same_bytes_as_one_fed_at_once(batches):
    # Small updates set registers in Python, large ones with numpy: both must give the same bytes.
    piecewise = Hll()
    for batch in batches:
        piecewise.add_hashes([hash_user(f"u{u}") for u in batch])
    assert piecewise.to_bytes() == sketch([u for batch in batches for u in batch]).to_bytes()


@pytest.mark.parametrize("n", [0, 5, 64, 65, 161, 3000])
def test_hashes_given_as_a_numpy_array_make_the_same_sketch_as_a_list(n):
    # The aggregator hands a cell's hashes over as a slice of a numpy array (tally.cell_log).
    hashes = [hash_user(f"user-{i}") for i in range(n)]
    for start in ([], [hash_user(f"other-{i}") for i in range(200)]):  # into a set, and into registers
        from_list, from_array = Hll(), Hll()
        for h in (from_list, from_array):
            h.add_hashes(start)
        from_list.add_hashes(hashes)
        from_array.add_hashes(np.array(hashes, dtype=np.int64))
        assert from_array.to_bytes() == from_list.to_bytes()
