"""Events taken into cells but not yet folded: columns per batch, folded into every cell at once.

At 10,000 keys a minute a Kafka batch of 100,000 events touches 10,000-20,000 cells with 5-10
events each, and folding each cell per batch (its values, its users' hashes, its sketch) cost more
than looking the cells up (py-spy). Here a batch leaves only columns behind: each event's cell
number, its value and its user's hash, as numpy arrays. `fold_into_cells` then does the sums, counts,
minimums and maximums of every cell in a few numpy calls and touches each cell once, however many
batches it spans (until the next committing flush, or MAX_EVENTS).

The fold gives the very same numbers as adding one event at a time: values are added to a cell's
sum in stream order (`np.add.at` applies its additions in the order given, starting from the
cell's sum), so a sum depends only on the events and their order, never on where batches, flushes
or settles fell, and a replay writes the same bits.
"""

from __future__ import annotations

import math
from operator import attrgetter

import mmh3
import numpy as np

from tally.cells import Acc, Key
from tally.events.schema import Event

# Events held before they are folded anyway: 28 bytes each at most (a cell number in 4, a value in
# 8 and another 4, a hash in 8 and another 4), so at most ~28 MB a partition.
MAX_EVENTS = 1_000_000
_NO_VALUE = math.nan  # never a value: the schema refuses NaN (tally.events.schema)
_value, _user_id = attrgetter("value"), attrgetter("user_id")
_hash64 = mmh3.hash64  # on a str it hashes the UTF-8 bytes, as tally.sketch.hash_user does


class CellLog:
    __slots__ = ("index", "accs", "ids", "value_ids", "values", "user_ids", "hashes", "events")

    def __init__(self) -> None:
        self.index: dict[Key, int] = {}  # cell -> its number in this log
        self.accs: list[Acc] = []  # by number: the cell's accumulator (the one in the open cells)
        self.ids: list[np.ndarray] = []  # per batch: each event's cell number
        self.value_ids: list[np.ndarray] = []  # per batch: the cell number of each event with a value
        self.values: list[np.ndarray] = []
        self.user_ids: list[np.ndarray] = []  # per batch: the cell number of each event with a user
        self.hashes: list[np.ndarray] = []  # their users' hashes (tally.sketch.hash_user)
        self.events = 0

    def append(self, events: list[Event], ids: list[int]) -> bool:
        """One batch's events and their cell numbers (parallel lists); True when the log is full."""
        if not ids:
            return False
        cells = np.array(ids, dtype=np.int32)
        self.ids.append(cells)
        values = list(map(_value, events))
        if None in values:
            held = np.array([_NO_VALUE if v is None else v for v in values], dtype=np.float64)
            has = ~np.isnan(held)
            self.value_ids.append(cells[has])
            self.values.append(held[has])
        else:
            self.value_ids.append(cells)
            self.values.append(np.array(values, dtype=np.float64))
        users = list(map(_user_id, events))
        if None in users:
            has = np.array([u is not None for u in users], dtype=bool)
            self.user_ids.append(cells[has])
            users = [u for u in users if u is not None]
        else:
            self.user_ids.append(cells)
        self.hashes.append(np.array([_hash64(u, 0, True, True)[0] for u in users], dtype=np.int64))
        self.events += len(ids)
        return self.events >= MAX_EVENTS

    def fold_into_cells(self) -> None:
        """Every cell's count, value count, sum, minimum, maximum and sketch, updated once."""
        accs = self.accs
        n = len(accs)
        counts = np.bincount(np.concatenate(self.ids), minlength=n).tolist()
        value_ids = np.concatenate(self.value_ids)
        if value_ids.size:
            values = np.concatenate(self.values)
            value_counts = np.bincount(value_ids, minlength=n).tolist()
            sums = np.array([acc.value_sum for acc in accs], dtype=np.float64)
            np.add.at(sums, value_ids, values)
            lows = np.full(n, np.inf)
            np.minimum.at(lows, value_ids, values)
            highs = np.full(n, -np.inf)
            np.maximum.at(highs, value_ids, values)
            for acc, count, held, total, low, high in zip(
                accs, counts, value_counts, sums.tolist(), lows.tolist(), highs.tolist(), strict=True
            ):
                acc.count += count
                if held:
                    acc.value_count += held
                    acc.value_sum = total
                    if acc.value_min is None or low < acc.value_min:
                        acc.value_min = low
                    if acc.value_max is None or high > acc.value_max:
                        acc.value_max = high
        else:
            for acc, count in zip(accs, counts, strict=True):
                acc.count += count
        user_ids = np.concatenate(self.user_ids)
        if user_ids.size:
            order = np.argsort(user_ids, kind="stable")
            user_ids, hashes = user_ids[order], np.concatenate(self.hashes)[order]
            starts = np.flatnonzero(np.diff(user_ids)) + 1
            bounds = np.concatenate(([0], starts, [user_ids.size])).tolist()
            for cell, start, end in zip(user_ids[bounds[:-1]].tolist(), bounds[:-1], bounds[1:], strict=True):
                accs[cell].users.add_hashes(hashes[start:end])
