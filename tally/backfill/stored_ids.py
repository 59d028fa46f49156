"""Which event ids raw storage already holds, per (event_type, hour, partition): what a backfill
must not add again.

Each (type, hour, partition) is read from Cassandra once, the first time a chunk touches it, and
from then on kept up to date with what the run itself adds. Rows an earlier, interrupted attempt of
this run wrote for chunks it did not commit are not evidence of anything: they are deleted as they
are met, and the chunk that wrote them writes them again.

Held in memory: about 100 bytes an id of the hours a run touches (a day of 10 B/day density would
need a disk-backed set; see the README's backfill section).
"""

from __future__ import annotations

import msgspec
from cassandra.concurrent import execute_concurrent_with_args

from tally.backfill import ledger
from tally.storage.raw_events import DELETE_CHUNK, from_us

Key = tuple[str, int, int]  # (event_type, hour start in epoch s, partition)


class _Id(msgspec.Struct):
    event_id: str


_ids = msgspec.json.Decoder(list[_Id])


class StoredIds:
    def __init__(self, session, run_id: int):
        self.session = session
        self.run_id = run_id
        self.select = session.prepare(
            "select slot, first_offset, events from event_chunks where event_type = ? and hour = ? and shard = ?"
        )
        self.delete = session.prepare(DELETE_CHUNK)
        self.ids: dict[Key, set[str]] = {}

    def load(self, keys: set[Key], chunk: int) -> None:
        """Read the keys not read yet (all at once). `chunk`: the one about to be written; this run's
        rows of it or of later chunks are leftovers of an interrupted attempt."""
        todo = [k for k in keys if k not in self.ids]
        if not todo:
            return
        params = [(et, from_us(hour * 1_000_000), p) for et, hour, p in todo]
        results = execute_concurrent_with_args(self.session, self.select, params, concurrency=64)
        leftovers = []
        for key, (ok, rows) in zip(todo, results, strict=True):
            if not ok:
                raise rows
            found: set[str] = set()
            for row in rows:
                writer = ledger.writer_of(row.first_offset)
                if writer is not None and writer[0] == self.run_id and writer[1] >= chunk:
                    leftovers.append((key[0], from_us(key[1] * 1_000_000), key[2], row.slot, row.first_offset))
                    continue
                found.update(e.event_id for e in _ids.decode(row.events))
            self.ids[key] = found
        if leftovers:
            for ok, error in execute_concurrent_with_args(self.session, self.delete, leftovers, concurrency=32):
                if not ok:
                    raise error

    def add(self, key: Key, event_id: str) -> bool:
        """Remember the id under its key; False if it was there already."""
        ids = self.ids[key]
        if event_id in ids:
            return False
        ids.add(event_id)
        return True
