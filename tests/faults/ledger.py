"""A run of events through an API while something breaks, and the checks against what was accepted.

The ledger is the bodies the API answered 202 for: those events, each once, must be counted in the
rollups and stored in Cassandra; nothing else may be. Counted means every metric: count, sum, min,
max and unique users, per minute and per hour row. So the run's event times straddle an hour
boundary in the past, on a pipeline of its own (tests.faults.pipeline), and a last body moves every
partition two hours on: both hours close and their hour rows are written, under whatever broke.
"""

from __future__ import annotations

import json
import os
import random
import threading
import time
import uuid
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta

import httpx

from tally.auth.devissuer import bearer
from tally.producer import partition_of
from tally.storage import raw_events, raw_reader, rollup_store
from tally.storage.reconcile import reconcile
from tests.e2e.conftest import iso, wait_for

SOURCES = ["web", "ios", "api"]
# (event_type, source) keys a minute: 12 by default; TALLY_FAULT_KEYS=10000 runs the same faults at
# the cardinality of issue 12 (types named t0, t1, ... of the run, three sources each).
KEYS = int(os.environ.get("TALLY_FAULT_KEYS", "12"))
# /api/aggregate takes this many event types a request (tally.api.params.MAX_FILTER_VALUES).
TYPES_PER_QUERY = 100
METRICS = ["count", "sum", "min", "max", "unique_users"]
# Fewer users than the sketch's exact range (160 a cell), so unique_users has an exact truth too.
USERS = 150
Cells = dict[tuple[str, str, str], tuple]  # (minute or hour "YYYY-MM-DDTHH:MM", type, source) -> metrics


class Run:
    def __init__(
        self,
        pipeline,
        events: int,
        rate: float,
        copies: float = 0.05,
        seed: int = 99,
        spread_s: int = 120,
        late: float = 0.0,
        keys: int = KEYS,
    ):
        self.settings = pipeline
        self.url = f"http://127.0.0.1:{pipeline.api_port}"
        self.auth = bearer(pipeline, ttl_s=6 * 3600)
        self.rate = rate
        self.run_id = f"k{uuid.uuid4().hex[:8]}"  # ids never sent before: earlier runs' are remembered, rightly
        self.types = [f"{self.run_id}.t{i}" for i in range(-(-keys // len(SOURCES)))]
        # Yesterday, on an hour: the run's on-time events fall either side of it.
        self.boundary = (datetime.now(UTC) - timedelta(days=1)).replace(minute=0, second=0, microsecond=0)
        self.start = self.boundary - timedelta(seconds=spread_s // 2)
        self.spread_us = spread_s * 1_000_000
        # A fraction of events half an hour before the run: far beyond the allowed lateness.
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
        self.framing = 0  # events of the opening and closing bodies, counted like the rest
        self._lock = threading.Lock()
        self._senders: list[threading.Thread] = []

    def _event(self, i: int, rng: random.Random, start: datetime, event_id: str | None = None) -> bytes:
        return json.dumps(
            {
                "event_id": event_id or f"{self.run_id}-{i}",
                "event_type": rng.choice(self.types),
                "timestamp": iso(start + timedelta(microseconds=rng.randrange(self.spread_us))),
                "source": rng.choice(SOURCES),
                "user_id": f"u{rng.randrange(USERS)}",
                "value": rng.randrange(-50, 100) + rng.choice([0, 0.5, 0.25]),
            }
        ).encode()

    def _every_partition(self, name: str, at: datetime) -> bytes:
        """A body with events in every partition, all at `at`, each partition's watermark moves there."""
        rng = random.Random(name)
        lines, covered, i = [], set(), 0
        while len(covered) < self.settings.kafka_partitions or len(lines) < 40:
            event_id = f"{self.run_id}-{name}-{i}"
            covered.add(partition_of(event_id, self.settings.kafka_partitions))
            event = json.loads(self._event(i, rng, at, event_id))
            event["timestamp"] = iso(at)
            lines.append(json.dumps(event).encode())
            i += 1
        self.framing += len(lines)
        return b"\n".join(lines)

    # ---- sending ------------------------------------------------------------------------------
    def open(self) -> None:
        """Every partition's watermark at the end of the run's window first, so its late events
        are late wherever they land."""
        with httpx.Client(base_url=self.url, timeout=60, headers=self.auth) as client:
            self._post_until_accepted(client, self._every_partition("open", self.end))

        def moved() -> bool:
            wm = self._watermark()
            return wm is not None and wm >= self.end

        wait_for(moved, 60, "every partition's watermark at the run's window")

    def close(self) -> None:
        """Every partition two hours on: the run's hours close and their hour rows are written."""
        with httpx.Client(base_url=self.url, timeout=60, headers=self.auth) as client:
            self._post_until_accepted(client, self._every_partition("close", self.closing))

    @property
    def end(self) -> datetime:
        return self.start + timedelta(microseconds=self.spread_us)

    @property
    def closing(self) -> datetime:
        return self.boundary + timedelta(hours=2)

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
        with httpx.Client(base_url=self.url, timeout=60, headers=self.auth) as client:
            sent = 0
            for body in bodies:
                self._post_until_accepted(client, body)
                sent += body.count(b"\n") + 1
                ahead = sent / (self.rate / connections) - (time.monotonic() - t0)
                if ahead > 0:
                    time.sleep(ahead)

    def _post_until_accepted(self, client: httpx.Client, body: bytes) -> None:
        # As a client should: a refused body is sent again until accepted. It may have reached
        # Kafka anyway (the answer, not the write, failed): the copies that then arrive are the
        # dataflow's to drop.
        for _attempt in range(120):
            try:
                r = client.post("/api/events", content=body, headers={"Content-Type": "application/x-ndjson"})
                ok = r.status_code == 202
            except httpx.HTTPError:
                ok = False
            with self._lock:
                if ok:
                    self.accepted.append(body)
                    return
                self.refused += 1
            time.sleep(1)
        raise AssertionError("a body was refused for two minutes")

    # ---- checking -----------------------------------------------------------------------------
    def truth(self, late: bool = False, width: str = "minute") -> tuple[Cells, set[str]]:
        """Every metric of the distinct accepted events per (minute or hour, type, source), on time
        (or late: count only), and every id."""
        cells: dict[tuple, list] = defaultdict(lambda: [0, 0.0, None, None, set()])
        ids: set[str] = set()
        cut = iso(self.start)[:19]  # to the second: ".5Z" sorts before "Z"
        for body in self.accepted:
            for line in body.split(b"\n"):
                e = json.loads(line)
                if e["event_id"] in ids:
                    continue
                ids.add(e["event_id"])
                if (e["timestamp"][:19] < cut) != late:
                    continue
                t = e["timestamp"][:16] if width == "minute" else e["timestamp"][:13] + ":00"
                c = cells[(t, e["event_type"], e["source"])]
                v = e["value"]
                c[0] += 1
                c[1] += v
                c[2] = v if c[2] is None else min(c[2], v)
                c[3] = v if c[3] is None else max(c[3], v)
                c[4].add(e["user_id"])
        if late:
            return {k: (c[0],) for k, c in cells.items()}, ids
        return {k: (c[0], c[1], c[2], c[3], len(c[4])) for k, c in cells.items()}, ids

    def _answer(self, granularity: str, metrics: list[str], start: datetime, end: datetime) -> list[dict]:
        """The series of /api/aggregate for the run's types, asked a hundred types at a time."""
        series: list[dict] = []
        for k in range(0, len(self.types), TYPES_PER_QUERY):
            params = [("from", iso(start)), ("to", iso(end)), ("granularity", granularity)]
            params += [("metrics", ",".join(metrics)), ("group_by", "event_type,source")]
            params += [("event_type", t) for t in self.types[k : k + TYPES_PER_QUERY]]
            r = httpx.get(f"{self.url}/api/aggregate", params=params, timeout=60, headers=self.auth)
            if r.status_code == 503:  # the rollup store is still coming back
                return []
            assert r.status_code == 200, r.text
            series += r.json()["series"]
        return series

    def _watermark(self) -> datetime | None:
        params = {"from": iso(self.start), "to": iso(self.end + timedelta(minutes=1)), "event_type": self.types[0]}
        r = httpx.get(f"{self.url}/api/aggregate", params=params, timeout=60, headers=self.auth)
        wm = r.json().get("watermark") if r.status_code == 200 else None
        return None if wm is None else datetime.fromisoformat(wm)

    def _ranges(self, granularity: str, late: bool) -> list[tuple[datetime, datetime]]:
        """Where the run's events are: minutes around its windows and its closing body (with
        thousands of keys, a query over every empty minute between them would be most of the
        work), or the whole span by the hour."""
        minute = timedelta(minutes=1)
        if late:
            return [(self.late_start.replace(second=0, microsecond=0), self.start)]
        if granularity == "1h":
            return [(self.start.replace(minute=0, second=0, microsecond=0), self.closing + timedelta(hours=1))]
        run = (self.start.replace(second=0, microsecond=0), self.end.replace(second=0, microsecond=0) + minute)
        return [run, (self.closing, self.closing + minute)]

    def counted(self, granularity: str = "1m", late: bool = False) -> Cells:
        """What /api/aggregate answers, cell by cell, in the shape of `truth`."""
        metrics = ["late_count"] if late else METRICS
        out = {}
        for start, end in self._ranges(granularity, late):
            for s in self._answer(granularity, metrics, start, end):
                for p in s["points"]:
                    if p[metrics[0]]:
                        t = datetime.fromisoformat(p["t"]).astimezone(UTC).strftime("%Y-%m-%dT%H:%M")
                        out[(t, s["group"]["event_type"], s["group"]["source"])] = tuple(p[m] for m in metrics)
        return out

    def hour_rows(self) -> Cells:
        """The hour rows themselves, all partitions merged: written only when an hour closes."""
        with rollup_store.connect(self.settings) as conn:
            rows = conn.execute(
                "select bucket, event_type, source, sum(event_count), sum(value_sum), min(value_min),"
                " max(value_max), hll_cardinality(hll_union_agg(users::hll))::bigint from rollup_1h"
                " where event_type like %s group by 1, 2, 3",
                (f"{self.run_id}.%",),
            ).fetchall()
        return {(b.astimezone(UTC).strftime("%Y-%m-%dT%H:%M"), t, s): tuple(v) for b, t, s, *v in rows}

    def wait_exact(self, timeout_s: float = 300) -> float:
        """Seconds until every minute's metrics equal the ledger's; on timeout, by how much they differ."""
        truth, _ids = self.truth()
        last: list[Cells] = [{}]

        def exact() -> bool:
            last[0] = self.counted()
            return last[0] == truth

        try:
            return wait_for(exact, timeout_s=timeout_s, what="rollups equal to what was accepted")
        except AssertionError:
            got = Counter({k: v[0] for k, v in last[0].items()})
            want = Counter({k: v[0] for k, v in truth.items()})
            over = sum((got - want).values())
            under = sum((want - got).values())
            wrong = sum(1 for k in truth if k in last[0] and last[0][k] != truth[k])
            raise AssertionError(
                f"counted {got.total()} of {want.total()} accepted: {over} over, {under} under;"
                f" {wrong} cells with a metric off"
            ) from None

    def stored(self) -> Counter:
        """How often Cassandra holds each event_id of this run."""
        cluster = raw_events.cluster(self.settings)
        try:
            reader = raw_reader.RawEventReader(
                cluster.connect(self.settings.cassandra_keyspace), self.settings.kafka_partitions
            )
            out: Counter = Counter()
            hour = self.late_start.replace(minute=0, second=0, microsecond=0)
            while hour <= self.closing:
                for t in self.types:
                    out.update(e.event_id for e in reader.hour_ids(t, raw_events.us(hour)))
                hour += timedelta(hours=1)
            return out
        finally:
            cluster.shutdown()

    def mismatches(self) -> list:
        found = reconcile(self.settings, self.late_start, self.closing, self.types)
        return [m for m in found if m.event_type.startswith(self.run_id)]  # other tests' types may share the hour

    def check_everything(self) -> dict:
        """Every metric exact per minute and per hour row, each late event in the ledger, each
        accepted event stored once, reconciliation clean: the figures."""
        waited = self.wait_exact()
        time.sleep(3)  # and they stay so
        truth, ids = self.truth()
        assert self.counted() == truth
        hours, _ids = self.truth(width="hour")
        closed = {k: v for k, v in hours.items() if k[0] < iso(self.closing)[:16]}
        assert self.hour_rows() == closed  # written for the closed hours, and only for them
        assert {k: v for k, v in self.counted("1h").items() if k in closed} == closed
        assert len({k[0] for k in closed}) == 2  # both hours either side of the boundary
        late, _ids = self.truth(late=True)
        assert self.counted(late=True) == late  # every late one in the ledger, in its own minute
        stored = self.stored()
        assert set(stored) == ids
        twice = sum(n - 1 for n in stored.values())
        assert twice == 0, f"{twice} events stored more than once in Cassandra"
        assert self.mismatches() == []
        return {
            "accepted": len(ids),
            "copies_sent": self.copies,
            "late_ledgered": sum(v[0] for v in late.values()),
            "minute_cells_exact": len(truth),
            "hour_rows_exact": len(closed),
            "refused_then_resent": self.refused,
            "exact_after_s": round(waited),
            "mismatches": 0,
        }
