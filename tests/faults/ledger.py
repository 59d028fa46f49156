"""A run of events through the API while something breaks, and the checks against what was accepted.

The ledger is the bodies the API answered 202 for: those events, each once, must be counted in
the minute rollups and stored in Cassandra; nothing else may be.
"""

from __future__ import annotations

import json
import random
import threading
import time
import uuid
from collections import Counter
from datetime import datetime, timedelta

import httpx

from tally.storage import raw_events
from tally.storage.reconcile import reconcile
from tests.e2e.conftest import iso, minute_cells, recent_window, wait_for

TYPES = ["a", "b", "c", "d"]


class Run:
    def __init__(
        self,
        settings,
        events: int,
        rate: float,
        copies: float = 0.05,
        seed: int = 99,
        spread_s: int = 120,
        late: float = 0.0,
    ):
        self.settings = settings
        self.url = f"http://127.0.0.1:{settings.api_port}"
        self.rate = rate
        self.run_id = f"k{uuid.uuid4().hex[:8]}"  # ids never sent before: earlier runs' are remembered, rightly
        self.start, self.end = recent_window()
        self.spread_us = spread_s * 1_000_000  # event times fall in the window's first spread_s
        # A fraction of events half an hour old: far beyond the allowed lateness, for the ledger.
        self.late_start = self.start - timedelta(minutes=30)
        rng = random.Random(seed)
        n_late = int(events * late)
        lines = [self._event(i, rng, self.late_start if i < n_late else self.start) for i in range(events)]
        self.copies = int(events * copies)
        stream = lines + rng.sample(lines, self.copies)
        # Copies travel in the same body as their original or minutes later, as client retries do.
        rng.shuffle(stream)
        self.bodies = [b"\n".join(stream[i : i + 1000]) for i in range(0, len(stream), 1000)]
        self.accepted: list[bytes] = []
        self.refused = 0
        self._lock = threading.Lock()
        self._senders: list[threading.Thread] = []

    def _event(self, i: int, rng: random.Random, start: datetime) -> bytes:
        return json.dumps(
            {
                "event_id": f"{self.run_id}-{i}",
                "event_type": f"{self.run_id}.{rng.choice(TYPES)}",
                "timestamp": iso(start + timedelta(microseconds=rng.randrange(self.spread_us))),
                "source": rng.choice(["web", "ios", "api"]),
                "user_id": f"u{rng.randrange(1000)}",
                "value": rng.randrange(100),
            }
        ).encode()

    # ---- sending ------------------------------------------------------------------------------
    def start_sending(self, connections: int = 2) -> None:
        t0 = time.monotonic()
        self._senders = [
            threading.Thread(target=self._send, args=(self.bodies[k::connections], connections, t0), daemon=True)
            for k in range(connections)
        ]
        for s in self._senders:
            s.start()

    def sending(self) -> bool:
        return any(s.is_alive() for s in self._senders)

    def join(self) -> None:
        for s in self._senders:
            s.join()

    def _send(self, bodies: list[bytes], connections: int, t0: float) -> None:
        with httpx.Client(base_url=self.url, timeout=60) as client:
            sent = 0
            for body in bodies:
                # As a client should: a refused body is sent again until accepted. It may have
                # reached Kafka anyway (the answer, not the write, failed): the copies that
                # then arrive are the dataflow's to drop.
                for _attempt in range(120):
                    try:
                        r = client.post("/api/events", content=body, headers={"Content-Type": "application/x-ndjson"})
                        ok = r.status_code == 202
                    except httpx.HTTPError:
                        ok = False
                    with self._lock:
                        if ok:
                            self.accepted.append(body)
                            break
                        self.refused += 1
                    time.sleep(1)
                sent += body.count(b"\n") + 1
                ahead = sent / (self.rate / connections) - (time.monotonic() - t0)
                if ahead > 0:
                    time.sleep(ahead)

    # ---- checking -----------------------------------------------------------------------------
    def truth(self, late: bool = False) -> tuple[Counter, set[str]]:
        """Distinct accepted events per (minute, type, source), on time (or late), and every id."""
        cells: Counter = Counter()
        ids: set[str] = set()
        cut = iso(self.start)[:19]  # to the second: ".5Z" sorts before "Z"
        for body in self.accepted:
            for line in body.split(b"\n"):
                e = json.loads(line)
                if e["event_id"] not in ids:
                    ids.add(e["event_id"])
                    if (e["timestamp"][:19] < cut) == late:
                        cells[(e["timestamp"][:16], e["event_type"], e["source"])] += 1
        return cells, ids

    def counted(self, metric: str = "count") -> Counter:
        start, end = (self.late_start, self.start) if metric == "late_count" else (self.start, self.end)
        params = [("from", iso(start)), ("to", iso(end)), ("granularity", "1m"), ("metrics", metric)]
        params += [("group_by", "event_type,source")] + [("event_type", f"{self.run_id}.{t}") for t in TYPES]
        r = httpx.get(f"{self.url}/api/aggregate", params=params, timeout=60)
        if r.status_code == 503:  # the rollup store is still coming back
            return Counter()
        assert r.status_code == 200, r.text
        return minute_cells(r.json(), metric)

    def wait_exact(self, timeout_s: float = 300) -> float:
        """Seconds until the rollups equal the ledger; on timeout, by how much they differ."""
        truth, _ids = self.truth()
        last: list[Counter] = [Counter()]

        def exact() -> bool:
            last[0] = self.counted()
            return last[0] == truth

        try:
            return wait_for(exact, timeout_s=timeout_s, what="rollups equal to what was accepted")
        except AssertionError:
            over = sum(max(0, last[0][k] - truth[k]) for k in truth | last[0])
            under = sum(max(0, truth[k] - last[0][k]) for k in truth | last[0])
            raise AssertionError(
                f"counted {sum(last[0].values())} of {sum(truth.values())} accepted: {over} over, {under} under"
            ) from None

    def stored(self) -> Counter:
        """How often Cassandra holds each event_id of this run."""
        cluster = raw_events.cluster(self.settings)
        try:
            reader = raw_events.RawEventReader(
                cluster.connect(self.settings.cassandra_keyspace), self.settings.kafka_partitions
            )
            out: Counter = Counter()
            hour = self.late_start.replace(minute=0)
            while hour < self.end:
                for t in TYPES:
                    out.update(e.event_id for e in reader.hour(f"{self.run_id}.{t}", raw_events.us(hour)))
                hour += timedelta(hours=1)
            return out
        finally:
            cluster.shutdown()

    def mismatches(self) -> list:
        found = reconcile(self.settings, self.late_start, self.end, [f"{self.run_id}.{t}" for t in TYPES])
        return [m for m in found if m.event_type.startswith(self.run_id)]  # other tests' types may share the hour

    def check_everything(self) -> dict:
        """Rollups exact, each accepted event stored once, reconciliation clean: the figures."""
        waited = self.wait_exact()
        time.sleep(3)  # and they stay so
        truth, ids = self.truth()
        assert self.counted() == truth
        late, _ids = self.truth(late=True)
        assert self.counted("late_count") == late  # every late one in the ledger, in its own minute
        stored = self.stored()
        assert set(stored) == ids
        twice = sum(n - 1 for n in stored.values())
        assert twice == 0, f"{twice} events stored more than once in Cassandra"
        assert self.mismatches() == []
        return {
            "accepted": len(ids),
            "copies_sent": self.copies,
            "late_ledgered": sum(late.values()),
            "refused_then_resent": self.refused,
            "exact_after_s": round(waited),
            "mismatches": 0,
        }
