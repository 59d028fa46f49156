"""A stream at a chosen cardinality: events at a fixed rate of event time, over a fixed number of
(event_type, source) keys a minute, a few out of order, with the exact count of every cell.

The workload of the cardinality sweep (issue 12): nobody tuned Tally for it, so it is the same for
every key count and for the Flink figures it is compared with.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime

SOURCES = 4  # keys are (event_type, source): a key count k has k / 4 event types
COUNTRIES = ("us", "de", "fr", "in", "br", "jp", "gb", "ca")


class Workload:
    def __init__(
        self,
        prefix: str,
        events: int,
        keys: int,
        rate: float = 120_000,
        out_of_order: float = 0.02,
        disorder_s: float = 10.0,
        start: float | None = None,
        seed: int = 12,
    ):
        """`events` spread over event time at `rate` a second from `start` (epoch s; default: as many
        seconds before now as the stream spans, plus a minute), each of one of `keys` keys drawn
        uniformly; a share `out_of_order` of them stamped up to `disorder_s` earlier."""
        self.prefix = prefix
        self.events = events
        self.keys = keys
        self.rate = rate
        self.out_of_order = out_of_order
        self.disorder_s = disorder_s
        span = events / rate
        self.start = start if start is not None else datetime.now(UTC).timestamp() - span - 60
        self.rng = random.Random(seed)
        self.truth: Counter = Counter()  # events per (minute "YYYY-MM-DDTHH:MM", event_type, source)

    def keys_of(self) -> list[tuple[str, str]]:
        return [(f"{self.prefix}.t{k // SOURCES}", f"s{k % SOURCES}") for k in range(self.keys)]

    def bodies(self, per_body: int = 1000) -> Iterator[bytes]:
        """NDJSON bodies of `per_body` events, in event-time order but for the out-of-order ones;
        `truth` holds every cell of the bodies made so far."""
        rng, keys = self.rng, self.keys_of()
        n_keys = len(keys)
        stamps: dict[int, tuple[str, str]] = {}  # second -> (ISO second, minute), made once each
        lines: list[bytes] = []
        cells: Counter = Counter()
        for i in range(self.events):
            t = self.start + i / self.rate
            if rng.random() < self.out_of_order:
                t -= rng.random() * self.disorder_s
            ms = int(t * 1000)
            second = ms // 1000
            stamp = stamps.get(second)
            if stamp is None:
                iso = datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S")
                stamp = stamps[second] = (iso, iso[:16])
            event_type, source = keys[rng.randrange(n_keys)]
            cells[(stamp[1], event_type, source)] += 1
            lines.append(
                f'{{"event_id":"{self.prefix}-{i}","event_type":"{event_type}",'
                f'"timestamp":"{stamp[0]}.{ms % 1000:03d}Z","source":"{source}",'
                f'"user_id":"u{rng.randrange(50_000)}","value":{rng.random() * 100:.3f},'
                f'"attributes":{{"country":"{COUNTRIES[i % 8]}"}}}}'.encode()
            )
            if len(lines) == per_body:
                self.truth.update(cells)
                cells.clear()
                yield b"\n".join(lines)
                lines = []
        if lines:
            self.truth.update(cells)
            yield b"\n".join(lines)

    def minutes(self) -> list[str]:
        return sorted({m for m, _t, _s in self.truth})
