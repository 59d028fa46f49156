"""The two shapes of an aggregate answer's `series`, encoded from pieces of points.

`rows` (the default) is a list of point objects per series: readable, and about 60 bytes a metric
value over a 30-day dashboard. `columns` is one array per field per series: `t` (bucket starts,
Unix seconds), one array per metric in the order asked, and `final`, how many points from the
first are final (points are in time order and finality only moves forward, so the final ones are
always the leading ones). Same numbers, a quarter of the bytes, and a chart library takes the
arrays as they are.

An answer is put together from pieces (the cached final days, the live head and tail: see
tally.storage.aggregate_cache), so each layout encodes a piece of a series' points once into a
fragment, and joins fragments without decoding them again.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Protocol

import msgspec

_encode = msgspec.json.Encoder().encode

# A piece of one series' points, encoded: whatever the layout needs to join it with the others.
Fragment = tuple


class Layout(Protocol):
    name: str

    def fragment(self, points: list[dict]) -> Fragment: ...

    def merge(self, fragments: Sequence[Fragment]) -> Fragment: ...

    def series(self, group: dict, fragments: Sequence[Fragment]) -> list[bytes]: ...


class Rows:
    name = "rows"

    def fragment(self, points: list[dict]) -> Fragment:
        return (_encode(points)[1:-1],)

    def merge(self, fragments: Sequence[Fragment]) -> Fragment:
        """Consecutive fragments of one series as one."""
        return (b",".join([f[0] for f in fragments if f[0]]),)

    def series(self, group: dict, fragments: Sequence[Fragment]) -> list[bytes]:
        return [b'{"group":', _encode(group), b',"points":[', b",".join(f[0] for f in fragments if f[0]), b"]}"]


class Columns:
    name = "columns"

    def __init__(self, metrics: Sequence[str]):
        self.metrics = list(metrics)
        self._names = [b',"' + m.encode() + b'":[' for m in ["t", *self.metrics]]

    def fragment(self, points: list[dict]) -> Fragment:
        columns = [[int(p["t"].timestamp()) for p in points]]
        columns += [[p[m] for p in points] for m in self.metrics]
        return (*(_encode(c)[1:-1] for c in columns), sum(1 for p in points if p["final"]))

    def merge(self, fragments: Sequence[Fragment]) -> Fragment:
        columns = [b",".join([f[i] for f in fragments if f[i]]) for i in range(len(self._names))]
        return (*columns, sum(f[-1] for f in fragments))

    def series(self, group: dict, fragments: Sequence[Fragment]) -> list[bytes]:
        parts = [b'{"group":', _encode(group)]
        for i, name in enumerate(self._names):
            parts += (name, b",".join(f[i] for f in fragments if f[i]), b"]")
        parts += (b',"final":', str(sum(f[-1] for f in fragments)).encode(), b"}")
        return parts


def layout(name: str, metrics: Sequence[str]) -> Layout:
    return Columns(metrics) if name == "columns" else Rows()


def encode_series(how: Layout, series: Iterable[dict]) -> bytes:
    """A list of series as aggregates.run returns them, in the layout, as the answer's array."""
    parts = [b"["]
    for i, s in enumerate(series):
        if i:
            parts.append(b",")
        parts += how.series(s["group"], [how.fragment(s["points"])] if s["points"] else [])
    parts.append(b"]")
    return b"".join(parts)
