"""Rollup cells: a (minute or hour, event_type, source) of one Kafka partition and its accumulator.

Rollups are kept per Kafka partition: each partition's rows are complete on their own, so a
partition can overwrite its rows (never increment) and commit its Kafka offset in the same
transaction. Queries add the partitions up (counts and sums add; min/max combine; sketches merge).
Nothing here does I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

from tally.sketch import Hll, hash_user

BUCKET_S = 60
HOUR_S = 3600


@dataclass(slots=True)
class Acc:
    """One (minute, event_type, source) cell of one partition."""

    count: int = 0
    value_count: int = 0
    value_sum: float = 0.0
    value_min: float | None = None
    value_max: float | None = None
    users: Hll = field(default_factory=Hll)

    def add(self, value: float | None, user_id: str | None) -> None:
        self.count += 1
        if value is not None:
            self.value_count += 1
            self.value_sum += value
            if self.value_min is None or value < self.value_min:
                self.value_min = value
            if self.value_max is None or value > self.value_max:
                self.value_max = value
        if user_id is not None:
            self.users.add_hashes((hash_user(user_id),))

    def merge(self, other: Acc) -> None:
        self.count += other.count
        self.value_count += other.value_count
        self.value_sum += other.value_sum
        if other.value_min is not None and (self.value_min is None or other.value_min < self.value_min):
            self.value_min = other.value_min
        if other.value_max is not None and (self.value_max is None or other.value_max > self.value_max):
            self.value_max = other.value_max
        self.users.merge(other.users)


Key = tuple[int, str, str]  # (bucket start, epoch seconds; event_type; source)


@dataclass(slots=True)
class RollupRow:
    """What is written to the rollup table for one cell of one partition."""

    bucket: int
    event_type: str
    source: str
    partition: int
    acc: Acc
    final: bool
    width: int = BUCKET_S  # 60: a minute row; 3600: an hour row (the sum of its minutes)

    @property
    def bucket_time(self) -> datetime:
        return datetime.fromtimestamp(self.bucket, UTC)


def bucket_of(ts: float) -> int:
    t = int(ts // 1)
    return t - t % BUCKET_S


def hour_of(t: int) -> int:
    """The start of the hour holding epoch second (or minute) `t`."""
    return t - t % HOUR_S
