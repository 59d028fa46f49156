"""Unique-count sketches, byte-compatible with the PostgreSQL `hll` extension (postgresql-hll).

A sketch is built from 64-bit MurmurHash3 hashes of user ids, exactly as `hll_hash_text` does,
and serialised byte for byte as the extension serialises the same set, so minute sketches written
by the dataflow merge into 5-minute, hourly and daily uniques in SQL with `hll_union_agg`, or here
with `Hll.merge`: never by summing counts.

Parameters are the extension's defaults: log2m=11 (2,048 registers, ~2.3 % standard error),
regwidth=5, explicit threshold auto (160 hashes), sparse on.

Like the extension, a sketch holds one of two things: the set of hashes while it has at most 160
(stored EXPLICIT, or EMPTY), then registers for good (a union or add never goes back). Registers
are stored SPARSE (16-bit index+value pairs) while fewer than 640 are non-zero, that is while
SPARSE is the smaller of the two, FULL (5 bits per register) beyond. That choice is made when
writing, from the registers alone, as the extension's `multiset_pack` makes it: a register never
decreases, so a FULL sketch never turns SPARSE again, and no other history needs to be kept.
"""

from __future__ import annotations

import math
import sys
from array import array
from collections.abc import Iterable

import mmh3
import numpy as np

LOG2M = 11
REGWIDTH = 5
M = 1 << LOG2M
MAX_REGISTER = (1 << REGWIDTH) - 1
# The extension's "auto" explicit cutoff: as many 8-byte hashes as fit in the FULL size.
EXPLICIT_MAX = (M * REGWIDTH // 8) // 8
# multiset_pack writes SPARSE while its (LOG2M + REGWIDTH)-bit entries take fewer bits than FULL.
SPARSE_MAX = (M * REGWIDTH - 1) // (LOG2M + REGWIDTH)
STANDARD_ERROR = 1.04 / math.sqrt(M)
_U64 = (1 << 64) - 1
_LITTLE = sys.byteorder == "little"
_SMALL = 64  # up to this many hashes, registers are set in Python; beyond, with numpy

_VERSION = 1
_EMPTY, _EXPLICIT, _SPARSE, _FULL = 1, 2, 3, 4
_PARAMS = bytes([((REGWIDTH - 1) << 5) | LOG2M, (1 << 6) | 63])  # sparse on, explicit cutoff auto
_HEADER = {kind: bytes([(_VERSION << 4) | kind]) + _PARAMS for kind in (_EMPTY, _EXPLICIT, _SPARSE, _FULL)}
_FULL_BYTES = M * REGWIDTH // 8
# FULL packs 8 registers into 5 bytes: each register is shifted into its place in a 40-bit
# big-endian word (the first register highest), by a product with these powers of two when writing.
_SHIFTS = np.arange(7, -1, -1, dtype=np.uint64) * np.uint64(REGWIDTH)
_PLACES = np.uint64(1) << _SHIFTS
# 2**-r for every register value r: the estimator's sum, by count of registers at each value.
_INVERSE_POWERS = np.exp2(-np.arange(MAX_REGISTER + 1, dtype=np.float64))
# The extension's large-range correction starts at 2**(LOG2M + MAX_REGISTER - 1) / 30.
_TWO_TO_L = float(1 << (LOG2M + MAX_REGISTER - 1))


def hash_user(user_id: str) -> int:
    """The signed 64-bit hash `hll_hash_text(user_id)` computes (MurmurHash3 x64 128, seed 0, first half)."""
    return mmh3.hash64(user_id.encode(), 0, True, True)[0]


class Hll:
    __slots__ = ("explicit", "registers", "_compacted")

    def __init__(self) -> None:
        # The hashes while explicit, as 8-byte integers, repeats allowed until `_compact` drops them
        # (when it has twice the cutoff, and before any read). A Python set of 160 ints took ~13 KB
        # where this takes at most 2.6 KB: with 10,000 keys a minute the dataflow holds ~70,000 open
        # cells per partition, and their sets were most of its memory (2.3 GB a process).
        self.explicit: array | None = array("q")
        self._compacted = 0  # the explicit hashes' count when last compacted: while it holds, no repeats
        # A bytearray, not a numpy array: a few hashes at a time (one cell of one Kafka batch) are
        # set with plain indexing, ~20x cheaper than numpy's per-call overhead; large updates and
        # merges use a numpy view of the same memory.
        self.registers: bytearray | None = None

    # ---- building -----------------------------------------------------------------------------
    def add_hashes(self, hashes: Iterable[int]) -> None:
        if self.explicit is not None:
            if isinstance(hashes, np.ndarray):
                self.explicit.frombytes(hashes.astype(np.int64, copy=False).tobytes())
            else:
                self.explicit.extend(hashes)
            if len(self.explicit) > 2 * EXPLICIT_MAX:
                self._compact()
            return
        if isinstance(hashes, array):
            self._add_to_registers(np.frombuffer(hashes, dtype=np.int64))
            return
        if isinstance(hashes, np.ndarray):
            if hashes.size > _SMALL:
                self._add_to_registers(hashes.astype(np.int64, copy=False))
                return
            hashes = hashes.tolist()
        if not isinstance(hashes, list | tuple | set) or len(hashes) > _SMALL:
            self._add_to_registers(np.fromiter(hashes, dtype=np.int64))
            return
        regs = self.registers
        for h in hashes:
            u = h & _U64
            substream = u >> LOG2M
            if substream:  # an all-zero substream carries no information
                rank = (substream & -substream).bit_length()
                if rank > MAX_REGISTER:
                    rank = MAX_REGISTER
                i = u & (M - 1)
                if rank > regs[i]:
                    regs[i] = rank

    def add(self, user_id: str) -> None:
        self.add_hashes((hash_user(user_id),))

    def merge(self, other: Hll) -> None:
        if other.explicit is not None:
            self.add_hashes(other.explicit)
            return
        if self.explicit is not None:
            self._promote()
        mine = np.frombuffer(self.registers, dtype=np.uint8)
        np.maximum(mine, np.frombuffer(other.registers, dtype=np.uint8), out=mine)

    def _compact(self) -> None:
        """Drop repeated explicit hashes; past the cutoff, registers from then on (as the extension
        does the moment its set grows past it: the same sketch either way)."""
        if not self.explicit or len(self.explicit) == self._compacted:
            return
        distinct = sorted(set(self.explicit))  # sorted, as to_bytes needs; for a few hundred, faster than numpy
        if len(distinct) > EXPLICIT_MAX:
            self._promote(np.array(distinct, dtype=np.int64))
        else:
            self.explicit = array("q", distinct)
            self._compacted = len(distinct)

    def _promote(self, hashes: np.ndarray | None = None) -> None:
        if hashes is None:
            hashes = np.frombuffer(self.explicit, dtype=np.int64) if self.explicit else np.empty(0, np.int64)
        self.explicit = None
        self.registers = bytearray(M)
        self._add_to_registers(hashes)

    def _add_to_registers(self, hashes: np.ndarray) -> None:
        if hashes.size == 0:
            return
        u = hashes.view(np.uint64)
        index = (u & np.uint64(M - 1)).astype(np.intp)
        substream = u >> np.uint64(LOG2M)
        keep = substream != 0  # an all-zero substream carries no information
        substream, index = substream[keep], index[keep]
        lowest_bit = substream & (~substream + np.uint64(1))
        rank = np.log2(lowest_bit.astype(np.float64)).astype(np.uint8) + 1
        np.minimum(rank, MAX_REGISTER, out=rank)
        np.maximum.at(np.frombuffer(self.registers, dtype=np.uint8), index, rank)

    # ---- reading ------------------------------------------------------------------------------
    def cardinality(self) -> float:
        """The estimate `hll_cardinality` returns for the same sketch, to the last bit."""
        self._compact()
        if self.explicit is not None:
            return float(len(self.explicit))
        counts = np.bincount(np.frombuffer(self.registers, dtype=np.uint8), minlength=MAX_REGISTER + 1)
        # Every term is a multiple of 2**-31 below 2**11, so this sum is exact, in any order, as the
        # extension's register-by-register sum is.
        total = float(counts @ _INVERSE_POWERS)
        estimate = (0.7213 / (1.0 + 1.079 / M)) * M * M / total
        zeros = int(counts[0])
        if zeros and estimate < 5.0 * M / 2.0:
            return M * math.log(M / zeros)  # linear counting for small cardinalities
        if estimate <= _TWO_TO_L / 30.0:
            return float(estimate)
        return -_TWO_TO_L * math.log(1.0 - estimate / _TWO_TO_L)

    # ---- storage format ----------------------------------------------------------------------
    def to_bytes(self) -> bytes:
        self._compact()
        if self.explicit is not None:
            if not self.explicit:
                return _HEADER[_EMPTY]
            # Sorted as signed integers, as the extension compares them (_compact sorted them).
            return _HEADER[_EXPLICIT] + np.frombuffer(self.explicit, dtype=np.int64).astype(">i8").tobytes()
        registers = np.frombuffer(self.registers, dtype=np.uint8)
        filled = np.flatnonzero(registers)
        if filled.size <= SPARSE_MAX:
            entries = (filled.astype(np.uint16) << REGWIDTH) | registers[filled]
            return _HEADER[_SPARSE] + entries.astype(">u2").tobytes()
        words = registers.reshape(-1, 8).astype(np.uint64) @ _PLACES
        return _HEADER[_FULL] + words.astype(">u8").view(np.uint8).reshape(-1, 8)[:, 3:].tobytes()

    @classmethod
    def from_bytes(cls, data: bytes) -> Hll:
        """Any sketch the extension writes with Tally's parameters. Bytes the extension refuses for
        their size or a repeated hash are refused; the order of explicit hashes is not checked
        (a set does not need it, and the check would cost more than the rest of the read)."""
        if len(data) < 3 or data[0] >> 4 != _VERSION or data[1:3] != _PARAMS:
            raise ValueError("unsupported hll parameters or version")
        kind, body = data[0] & 0x0F, data[3:]
        h = cls()
        if kind == _EMPTY and not body:
            return h
        if kind == _EXPLICIT and len(body) % 8 == 0:
            hashes = array("q", body)  # big-endian on disk: swapped below on little-endian machines
            if _LITTLE:
                hashes.byteswap()
            if len(set(hashes)) != len(hashes):
                raise ValueError("duplicate explicit hll elements")
            h.explicit = hashes  # compacted (sorted) if it is ever written back
            return h
        if kind == _SPARSE and len(body) % 2 == 0:
            h.explicit = None
            h.registers = _sparse_registers(np.frombuffer(body, dtype=">u2"))
            return h
        if kind == _FULL and len(body) == _FULL_BYTES:
            padded = np.zeros((M // 8, 8), dtype=np.uint8)
            padded[:, 3:] = np.frombuffer(body, dtype=np.uint8).reshape(-1, 5)
            words = padded.view(">u8").astype(np.uint64)
            h.explicit = None
            h.registers = bytearray(((words >> _SHIFTS) & np.uint64(MAX_REGISTER)).astype(np.uint8).tobytes())
            return h
        raise ValueError(f"unsupported or inconsistently sized hll storage type {kind}")


def _sparse_registers(entries: np.ndarray) -> bytearray:
    registers = bytearray(M)
    index = entries >> REGWIDTH
    values = (entries & MAX_REGISTER).astype(np.uint8)
    if index.size < 2 or bool(np.all(index[1:] > index[:-1])):
        np.frombuffer(registers, dtype=np.uint8)[index] = values
    else:
        # The extension writes registers in order; another writer's repeats keep the last value,
        # as the extension's sparse_unpack does (numpy does not promise which one it keeps).
        for i, v in zip(index.tolist(), values.tolist(), strict=True):
            registers[i] = v
    return registers
