"""Unique, current event bodies at almost no cost: a pre-built NDJSON template per body shape,
stamped with a fresh batch id and the current second by two bytes.replace calls."""

from __future__ import annotations

import itertools
from collections import Counter
from datetime import UTC, datetime

import msgspec

from tally.loadgen import Generator

_BATCH = b"@@BATCH@@"
_SECOND = b"2000-01-01T00:00:00"


class BodyFactory:
    def __init__(
        self, prefix: str, events_per_body: int, shapes: int = 16, event_types: int | None = None, seed: int = 1
    ):
        gen = Generator(seed=seed, event_types=event_types)
        enc = msgspec.json.Encoder()
        self.prefix = prefix
        self.templates = []
        for _ in range(shapes):
            lines = []
            for i in range(events_per_body):
                e = gen.event(datetime(2000, 1, 1, tzinfo=UTC))
                e["event_id"] = f"@@BATCH@@-{i}"
                e["event_type"] = f"{prefix}.{e['event_type']}"
                # Milliseconds spread the events inside the second the body is stamped with.
                e["timestamp"] = f"2000-01-01T00:00:00.{i % 1000:03d}Z"
                lines.append(enc.encode(e))
            self.templates.append(b"\n".join(lines))
        self.events_per_body = events_per_body
        self.counter = itertools.count()
        # Events of each template per (event_type, source): every event of a body is in one second.
        self.template_cells = [
            Counter((e["event_type"], e["source"]) for e in map(msgspec.json.decode, t.split(b"\n")))
            for t in self.templates
        ]

    def next(self) -> bytes:
        n = next(self.counter)
        second = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S").encode()
        t = self.templates[n % len(self.templates)]
        return t.replace(_BATCH, f"{self.prefix}-{n}".encode()).replace(_SECOND, second)

    def cells(self, body: bytes) -> Counter:
        """A body's events per (minute "YYYY-MM-DDTHH:MM", event_type, source), from its first line
        alone: which template it was stamped from and with which second."""
        first = msgspec.json.decode(body[: body.index(b"\n")] if b"\n" in body else body)
        n = int(first["event_id"].rsplit("-", 2)[-2])
        minute = first["timestamp"][:16]
        return Counter({(minute, *key): c for key, c in self.template_cells[n % len(self.templates)].items()})

    @property
    def event_types(self) -> list[str]:
        types = set()
        for t in self.templates:
            for line in t.split(b"\n"):
                types.add(msgspec.json.decode(line)["event_type"])
        return sorted(types)
