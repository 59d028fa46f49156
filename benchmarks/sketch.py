"""Microseconds per `Hll` call on the dataflow's hot paths, for each storage kind.

The dataflow adds one (cell, Kafka batch) of hashes at a time (often one or two), serialises each
changed cell once per flush and deserialises on restart and in queries; these are the calls timed.
Prints figures only: compare a run before and after a change to the sketch on the same machine.

    .venv/bin/python -m benchmarks.sketch
"""

from __future__ import annotations

import timeit

from tally.sketch import Hll, hash_user

USERS = (100, 500, 5_000)  # explicit, sparse (full before sparse was written), full
KINDS = {1: "empty", 2: "explicit", 3: "sparse", 4: "full"}


def built(n: int) -> Hll:
    h = Hll()
    h.add_hashes([hash_user(f"user-{i}") for i in range(n)])
    return h


def per_call_us(stmt, number: int) -> float:
    # The best of five runs: the machine is shared, and the minimum is the least disturbed.
    return min(timeit.repeat(stmt, number=number, repeat=5)) / number * 1e6


def timings(sketch: Hll) -> dict[str, float]:
    # Repeated hashes cost what new ones do here (a set update, or a register compared) and keep an
    # explicit sketch explicit however many times the call runs.
    one = [hash_user("new-user-a")]
    two = [hash_user("new-user-a"), hash_user("new-user-b")]
    stored = sketch.to_bytes()
    return {
        "add_hashes(1 hash)": per_call_us(lambda: sketch.add_hashes(one), 20_000),
        "add_hashes(2 hashes)": per_call_us(lambda: sketch.add_hashes(two), 20_000),
        "to_bytes": per_call_us(sketch.to_bytes, 2_000),
        "from_bytes": per_call_us(lambda: Hll.from_bytes(stored), 2_000),
    }


def main() -> None:
    print(f"{'call':<24}{'users':>7}{'kind':>10}{'µs/call':>10}")
    for n in USERS:
        sketch = built(n)
        kind = KINDS[sketch.to_bytes()[0] & 0x0F]
        for call, us in timings(sketch).items():
            print(f"{call:<24}{n:>7}{kind:>10}{us:>10.2f}")


if __name__ == "__main__":
    main()
