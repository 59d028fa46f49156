"""An in-memory filter of the event ids a dedup generation holds, so that a new id (nearly every
id) is known new without asking RocksDB.

Asking RocksDB is exact but costs ~1 us a generation from Python, and a new id is looked up in two
generations: 2-2.5 us an event, a fifth of the dataflow's CPU under live load (py-spy, 12-03).
A Bloom filter answers "certainly not here" for a batch in a few numpy calls; only ids it cannot
rule out (its ~2 % false positives, and real copies) are then looked up exactly. It never says
"not here" of an id it was given, so deduplication stays exact.

Blocked: all of an id's bits sit in one 64-bit word, so a lookup or an insert touches one word of
memory instead of five scattered ones (the filters outgrow the CPU caches; scattered probes cost
a cache miss each, 0.85 us an id inserted against 0.1). Ids are hashed with Python's own hash of
bytes (SipHash, seeded per process): the filters live only in memory and are rebuilt with the
process, never compared across processes.

A generation's filter grows as a chain of links, each four times the last (8, 32, 128 MiB; 10 bits
an id, ~1-2 % false positives), up to a byte budget (`dedup_filter_mib`); past it the generation
has no filter and its ids are asked of RocksDB again, as before (tally.dedup). The default 64 MiB
holds 33 M ids a generation and partition: a 10-minute run at 120,000 events/s over 4 partitions
is 18 M a partition; 10 B events a day is 105 M an hour and partition, which takes 192 MiB.
"""

from __future__ import annotations

import numpy as np

BITS_PER_ID = 10
FIRST_WORDS = 1 << 20  # the first link: 8 MiB, 6.7 M ids
GROWTH = 4
_K = 5  # bits set per id: 5 fields of 6 bits of the hash's upper half
_SHIFTS = np.array([32 + 6 * i for i in range(_K)], dtype=np.uint64)[:, None]
_SIX_BITS = np.uint64(63)
_ONE = np.uint64(1)


def hashes(keys: list[bytes]) -> np.ndarray:
    return np.fromiter(map(hash, keys), dtype=np.int64, count=len(keys)).view(np.uint64)


class _Link:
    __slots__ = ("words", "mask", "capacity", "count")

    def __init__(self, words: int):
        assert words & (words - 1) == 0, "a power of two: the word of an id is its hash's low bits"
        self.words = np.zeros(words, dtype=np.uint64)
        self.mask = np.uint64(words - 1)
        self.capacity = words * 64 // BITS_PER_ID
        self.count = 0

    def _locate(self, h: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        where = (h & self.mask).astype(np.intp)
        bits = np.bitwise_or.reduce(_ONE << ((h >> _SHIFTS) & _SIX_BITS), axis=0)
        return where, bits

    def may_contain(self, h: np.ndarray) -> np.ndarray:
        where, bits = self._locate(h)
        return (self.words[where] & bits) == bits

    def add(self, h: np.ndarray) -> None:
        where, bits = self._locate(h)
        # `.at`, not `words[where] |= bits`: that keeps only the last write to a word two ids share.
        np.bitwise_or.at(self.words, where, bits)
        self.count += len(h)


class IdFilter:
    """The ids of one dedup generation: `may_contain` is False only for ids never added."""

    def __init__(self, budget_bytes: int):
        self.budget = budget_bytes
        words = FIRST_WORDS
        while words > 64 and words * 8 > budget_bytes:  # a small budget (tests): a small first link
            words //= 2
        self.links = [_Link(words)]

    @property
    def nbytes(self) -> int:
        return sum(link.words.nbytes for link in self.links)

    def may_contain(self, h: np.ndarray) -> np.ndarray:
        found = self.links[0].may_contain(h)
        for link in self.links[1:]:
            found |= link.may_contain(h)
        return found

    def add(self, h: np.ndarray) -> bool:
        """Remember `h`; False if that would pass the budget (the filter is then of no use: the
        caller drops it, since it no longer holds every id of the generation)."""
        last = self.links[-1]
        if last.count + len(h) > last.capacity:
            words = len(last.words) * GROWTH
            while words * 64 // BITS_PER_ID < len(h):
                words *= GROWTH
            if self.nbytes + words * 8 > self.budget:
                return False
            last = _Link(words)
            self.links.append(last)
        last.add(h)
        return True
