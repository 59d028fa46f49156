"""Exact deduplication by event_id within a horizon, for one Kafka partition, on local disk.

Every copy of an event_id lands in the same partition (tally.producer.partition_of), so each
partition's consumer can decide alone whether it has seen an id. At 10 B events a day an hour
of ids is ~400 M, too many for memory, so they live in RocksDB (the engine Kafka Streams and
Flink keep their state in; through rocksdict), one store per partition. A Bloom filter alone would drop
real events on its false positives; RocksDB answers exactly and uses its own Bloom filters only
to skip files.

Horizon: ids are kept in generations of `horizon_s` of event time (the watermark's), one column
family each; lookups read the current and the previous generation, and older ones are dropped
whole (no per-key deletes). So an id is remembered for at least `horizon_s` and at most twice
that.

Crash safety without a transaction across RocksDB and PostgreSQL: each id is stored with the
stream position of its first copy (tally.flush.position: the same every time a message is read
again). A copy is a duplicate only if its position is after the stored one. After a crash the
dataflow re-reads from the offset committed with the rollups; ids it had already stored from that
tail come back at the very same positions and are kept again, not dropped. Ids are written with
a synced write before the flush that counted them is committed (`commit`), so a committed count
never outlives the memory of its ids.

The same synced write records where the flush ends (its next offset), before anything of it is
written: after a crash the dataflow cuts its first flushes at exactly those ends again, so raw
storage receives the very same chunk rows and overwrites them instead of leaving a piece of a
longer flush behind (tally.storage.raw_events).

Lookups: nearly every id is new, and asking RocksDB that costs ~1 us a generation, so each
generation also has an in-memory filter of its ids (tally.idfilter) that rules most new ids out in
a few numpy calls; only the ids it cannot rule out are looked up. A filter must hold every id of
its generation: a generation created by this process has one from its start (every id stored in it
passes through `commit`, which adds it); one found on disk gets one only if it is small enough to
read in at once (`LOAD_LIMIT` ids); otherwise, or once a filter would pass its memory budget, the
generation's ids are asked of RocksDB as before. After a restart of a busy partition that lasts
until the generations found on disk are dropped: within two horizons.
"""

from __future__ import annotations

import shutil
from itertools import repeat
from pathlib import Path

import numpy as np
from rocksdict import BlockBasedOptions, Options, Rdict, WriteBatch, WriteOptions

from tally.idfilter import IdFilter, hashes

_END = b"e"  # key prefix of flush ends
_KEEP_ENDS = 16
# A generation found on disk holding more ids than this is not read into a filter at start (about
# 2 s a million ids, all of it before the partition's first batch).
LOAD_LIMIT = 2_000_000
FILTER_BUDGET = 64 << 20  # bytes of filter a generation may take in a partition (dedup_filter_mib)


def _options() -> Options:
    opts = Options(raw_mode=True)
    opts.create_if_missing(True)
    opts.create_missing_column_families(True)
    opts.set_write_buffer_size(8 << 20)  # small memtables: 1.7 us an id against 2.6 at 64 MiB (fewer cache misses)
    opts.set_max_write_buffer_number(2)
    # Almost every lookup is for an id never seen: Bloom filters (10 bits a key, ~1 % false
    # positives, each then settled exactly by a read) let a miss skip the memtable's skip list
    # and every file; without them a miss in a memtable of 1 M ids cost 3 us, with them 0.3 us.
    # (Filter blocks stay out of the block cache: with cache_index_and_filter_blocks a miss
    # re-read them, 50 us.)
    table = BlockBasedOptions()
    table.set_bloom_filter(10, False)
    opts.set_block_based_table_factory(table)
    opts.set_memtable_prefix_bloom_ratio(0.1)
    opts.set_memtable_whole_key_filtering(True)
    return opts


class SeenIds:
    def __init__(self, path: Path, horizon_s: int, fresh: bool = False, filter_budget: int = FILTER_BUDGET):
        """`fresh`: nothing counted from this partition was ever committed, so ids remembered from
        an earlier life of the topic (same positions, other events) must go. `filter_budget`: bytes
        of in-memory filter a generation may take (0: none, every lookup asks RocksDB)."""
        self.horizon_s = horizon_s
        self.filter_budget = filter_budget
        if fresh and path.exists():
            shutil.rmtree(path)
        path.mkdir(parents=True, exist_ok=True)
        opts = _options()
        existing = (
            [cf for cf in Rdict.list_cf(str(path), opts) if cf.startswith("g")] if (path / "CURRENT").exists() else []
        )
        self.db = Rdict(str(path), opts, column_families={cf: _options() for cf in existing})
        self.gens: dict[int, Rdict] = {int(cf[1:]): self.db.get_column_family(cf) for cf in existing}
        self.current = max(self.gens, default=0)
        # Generation -> the filter of all its ids; a generation missing here is asked of RocksDB.
        self.filters: dict[int, IdFilter] = {}
        for gen, cf in self.gens.items():
            self._load_filter(gen, cf)
        self.pending: dict[bytes, int] = {}  # ids first seen since the last commit -> position
        # Ends of the latest flushes, in the default column family. Only the few flushes that may
        # not be committed yet matter; the sink commits each before the next batch is read.
        self.ends = sorted(int.from_bytes(k[1:], "big") for k in self.db.keys() if k[:1] == _END)  # noqa: SIM118 (Rdict has no __iter__)
        self._sync = WriteOptions()
        self._sync.sync = True

    def first_copies(self, ids: list[str], positions: list[int]) -> list[bool]:
        """For each (event_id, position), in stream order: True for the first copy of the id
        (count it), False for a later copy (suppress it)."""
        keys = list(map(str.encode, ids))
        newest = sorted(self.gens, reverse=True)[:2]
        pending = self.pending
        stored = self._maybe_stored(keys, newest)
        if stored is not None and not stored.any() and pending.keys().isdisjoint(keys) and len(set(keys)) == len(keys):
            pending.update(zip(keys, positions, strict=True))  # all new: the common case, no loop
            return [True] * len(keys)
        # One get per key and generation: rocksdict's multi-get measured 2x slower per key.
        gets = [self.gens[g].get for g in newest]
        out = []
        asks = repeat(True) if stored is None else stored.tolist()
        for key, pos, ask in zip(keys, positions, asks, strict=False):
            first = pending.get(key)
            if first is None and ask:
                for get in gets:
                    found = get(key)
                    if found is not None:
                        first = int.from_bytes(found, "big")
                        break
            if first is None:
                pending[key] = pos
                out.append(True)
            else:
                out.append(first >= pos)  # == : this very copy, read again after a restart
        return out

    def _maybe_stored(self, keys: list[bytes], gens: list[int]) -> np.ndarray | None:
        """Per key, whether RocksDB may hold it in `gens` (None: may, for every key)."""
        if not gens or not keys:
            return np.zeros(len(keys), dtype=bool)
        if any(g not in self.filters for g in gens):
            return None
        h = hashes(keys)
        stored = self.filters[gens[0]].may_contain(h)
        for g in gens[1:]:
            stored |= self.filters[g].may_contain(h)
        return stored

    def _load_filter(self, gen: int, cf: Rdict) -> None:
        """A filter for a generation found on disk, if it is small enough to read in now."""
        if not self.filter_budget or int(cf.property_int_value("rocksdb.estimate-num-keys") or 0) > LOAD_LIMIT:
            return
        ids = IdFilter(self.filter_budget)
        batch: list[bytes] = []
        for key in cf.keys():  # noqa: SIM118 (Rdict has no __iter__)
            batch.append(key)
            if len(batch) == 100_000:
                if not ids.add(hashes(batch)):
                    return
                batch = []
        if batch and not ids.add(hashes(batch)):
            return
        self.filters[gen] = ids

    def flush_ends(self, after: int) -> list[int]:
        """Ends of flushes cut past offset `after` (the committed one) before the last stop."""
        return [e for e in self.ends if e > after]

    def commit(self, watermark: int | None, flush_end: int | None = None) -> None:
        """Make the ids seen so far durable, with the end of the flush about to be written (call
        before writing it), and move to a new generation once the watermark enters one."""
        gen = max(self.current, (watermark or 0) // self.horizon_s)
        if gen not in self.gens:
            self.gens[gen] = self.db.create_column_family(f"g{gen}", _options())
            if self.filter_budget:
                self.filters[gen] = IdFilter(self.filter_budget)  # empty, as the generation is
        self.current = gen
        if self.pending and gen in self.filters and not self.filters[gen].add(hashes(list(self.pending))):
            del self.filters[gen]  # past its budget: this generation's ids are asked of RocksDB again
        if self.pending or flush_end is not None:
            batch = WriteBatch(raw_mode=True)
            handle = self.db.get_column_family_handle(f"g{gen}")
            for key, pos in self.pending.items():
                batch.put(key, pos.to_bytes(8, "big"), handle)
            if flush_end is not None and (not self.ends or flush_end > self.ends[-1]):
                self.ends.append(flush_end)
                batch.put(_END + flush_end.to_bytes(8, "big"), b"")
                while len(self.ends) > _KEEP_ENDS:
                    batch.delete(_END + self.ends.pop(0).to_bytes(8, "big"))
            self.db.write(batch, self._sync)
            self.pending = {}
        for old in [g for g in self.gens if g < gen - 1]:
            del self.gens[old]
            self.filters.pop(old, None)
            self.db.drop_column_family(f"g{old}")

    def disk_bytes(self) -> int:
        return sum(f.stat().st_size for f in Path(self.db.path()).iterdir() if f.is_file())

    def close(self) -> None:
        self.gens.clear()
        self.db.close()
