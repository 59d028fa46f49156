"""Unique-count sketches, byte-compatible with the PostgreSQL `hll` extension (postgresql-hll).

A sketch is built from 64-bit MurmurHash3 hashes of user ids, exactly as `hll_hash_text` does,
and serialised in the extension's storage format (EXPLICIT while small, FULL beyond), so minute
sketches written by the dataflow merge into 5-minute, hourly and daily uniques in SQL with
`hll_union_agg`, or here with `Hll.merge`: never by summing counts.

Parameters are the extension's defaults: log2m=11 (2,048 registers, ~2.3 % standard error),
regwidth=5, explicit threshold auto (160 hashes), sparse on.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import mmh3
import numpy as np

LOG2M = 11
REGWIDTH = 5
M = 1 << LOG2M
MAX_REGISTER = (1 << REGWIDTH) - 1
# The extension's "auto" explicit cutoff: as many 8-byte hashes as fit in the FULL size.
EXPLICIT_MAX = (M * REGWIDTH // 8) // 8
STANDARD_ERROR = 1.04 / math.sqrt(M)
_U64 = (1 << 64) - 1
_SMALL = 64  # up to this many hashes, registers are set in Python; beyond, with numpy

_VERSION = 1
_EMPTY, _EXPLICIT, _FULL = 1, 2, 4
_PARAMS = bytes([((REGWIDTH - 1) << 5) | LOG2M, (1 << 6) | 63])  # sparse on, explicit cutoff auto


def hash_user(user_id: str) -> int:
    """The signed 64-bit hash `hll_hash_text(user_id)` computes (MurmurHash3 x64 128, seed 0, first half)."""
    return mmh3.hash64(user_id.encode(), 0, True, True)[0]


class Hll:
    __slots__ = ("explicit", "registers")

    def __init__(self) -> None:
        self.explicit: set[int] | None = set()
        # A bytearray, not a numpy array: a few hashes at a time (one cell of one Kafka batch) are
        # set with plain indexing, ~20x cheaper than numpy's per-call overhead; large updates and
        # merges use a numpy view of the same memory.
        self.registers: bytearray | None = None

    # ---- building -----------------------------------------------------------------------------
    def add_hashes(self, hashes: Iterable[int]) -> None:
        if self.explicit is not None:
            self.explicit.update(hashes)
            if len(self.explicit) > EXPLICIT_MAX:
                self._promote()
            return
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

    def _promote(self) -> None:
        hashes = np.fromiter(self.explicit or (), dtype=np.int64)
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
        if self.explicit is not None:
            return float(len(self.explicit))
        registers = np.frombuffer(self.registers, dtype=np.uint8)
        regs = registers.astype(np.float64)
        alpha = 0.7213 / (1 + 1.079 / M)
        estimate = alpha * M * M / np.sum(np.exp2(-regs))
        zeros = int(np.count_nonzero(registers == 0))
        if estimate <= 2.5 * M and zeros:
            return M * math.log(M / zeros)  # linear counting for small cardinalities, as the extension does
        return float(estimate)

    # ---- storage format ----------------------------------------------------------------------
    def to_bytes(self) -> bytes:
        if self.explicit is not None:
            if not self.explicit:
                return bytes([(_VERSION << 4) | _EMPTY]) + _PARAMS
            body = np.array(sorted(self.explicit), dtype=">i8").tobytes()
            return bytes([(_VERSION << 4) | _EXPLICIT]) + _PARAMS + body
        bits = np.unpackbits(np.frombuffer(self.registers, dtype=np.uint8)[:, None], axis=1)[:, 8 - REGWIDTH :]
        return bytes([(_VERSION << 4) | _FULL]) + _PARAMS + np.packbits(bits.ravel()).tobytes()

    @classmethod
    def from_bytes(cls, data: bytes) -> Hll:
        h = cls()
        kind = data[0] & 0x0F
        if data[0] >> 4 != _VERSION or data[1:3] != _PARAMS:
            raise ValueError("unsupported hll parameters or version")
        if kind == _EMPTY:
            return h
        if kind == _EXPLICIT:
            h.explicit = set(np.frombuffer(data[3:], dtype=">i8").astype(np.int64).tolist())
            return h
        if kind == _FULL:
            bits = np.unpackbits(np.frombuffer(data[3:], dtype=np.uint8))[: M * REGWIDTH].reshape(M, REGWIDTH)
            padded = np.zeros((M, 8), dtype=np.uint8)
            padded[:, 8 - REGWIDTH :] = bits
            h.explicit = None
            h.registers = bytearray(np.packbits(padded, axis=1).ravel().tobytes())
            return h
        raise ValueError(f"unsupported hll storage type {kind}")
