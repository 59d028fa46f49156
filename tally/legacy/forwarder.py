"""Dual write: every event the API accepted is also forwarded to the legacy side, in the background.

Ingest never waits for the legacy side: `offer` only appends to a bounded buffer (one per API
worker) and returns. A task sends the buffer in batches; a batch that fails is retried with
backoff while the buffer keeps filling, and once the buffer is full, further events are dropped for
the legacy side only (they are in Tally already). Every drop is counted by reason in
tally_legacy_dropped_events_total and logged once a minute, never silent:
- buffer_full: the legacy side is slower than ingest or down;
- refused: the legacy side refused the batch for good (retrying cannot help);
- shutdown: still buffered when the worker stopped and could not be sent in legacy_timeout_s.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Sequence

from prometheus_client import Counter, Gauge

from tally.legacy.sinks import LegacySink, Refused

log = logging.getLogger("tally.legacy")

FORWARDED = Counter("tally_legacy_forwarded_events_total", "Events the legacy side acknowledged", ["sink"])
DROPPED = Counter(
    "tally_legacy_dropped_events_total", "Accepted events not forwarded to the legacy side", ["sink", "reason"]
)
FAILURES = Counter("tally_legacy_send_failures_total", "Batches the legacy side failed to take (retried)", ["sink"])
BUFFERED = Gauge(
    "tally_legacy_buffered_events", "Events waiting to be forwarded", ["sink"], multiprocess_mode="livesum"
)

BACKOFF_S = (0.2, 0.5, 1.0, 2.0, 5.0)
REPORT_EVERY_S = 60.0


class DualWriter:
    def __init__(self, sink: LegacySink, capacity: int, batch: int, timeout_s: float):
        self.sink = sink
        self.capacity = capacity
        self.batch = batch
        self.timeout_s = timeout_s
        self.buffer: deque[bytes] = deque()
        self.sending = 0  # events of the batch in flight, which count against the capacity too
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._dropped_since_report: dict[str, int] = {}
        self._reported_at = time.monotonic()
        self._buffered = BUFFERED.labels(sink.name)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="legacy-forwarder")

    def offer(self, values: Sequence[bytes]) -> None:
        """Take what fits of `values` for forwarding; count the rest dropped. Never blocks."""
        room = self.capacity - len(self.buffer) - self.sending
        if room >= len(values):
            self.buffer.extend(values)
        else:
            self.buffer.extend(values[: max(room, 0)])
            self._drop("buffer_full", len(values) - max(room, 0))
        self._buffered.set(len(self.buffer) + self.sending)
        self._wake.set()

    @property
    def waiting(self) -> int:
        return len(self.buffer) + self.sending

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self.buffer:
                await self._send_next()

    async def _send_next(self) -> None:
        n = min(self.batch, len(self.buffer))
        values = [self.buffer.popleft() for _ in range(n)]
        self.sending = n
        try:
            for attempt in range(1 << 62):
                try:
                    await asyncio.wait_for(self.sink.send(values), self.timeout_s)
                    FORWARDED.labels(self.sink.name).inc(n)
                    return
                except Refused as e:
                    self._drop("refused", n, str(e))
                    return
                except Exception as e:  # noqa: BLE001 - anything else may pass on a retry
                    FAILURES.labels(self.sink.name).inc()
                    if attempt == 0:
                        log.warning("legacy %s sink failed, retrying: %s", self.sink.name, e or type(e).__name__)
                    self._report()
                    await asyncio.sleep(BACKOFF_S[min(attempt, len(BACKOFF_S) - 1)])
        finally:
            self.sending = 0
            self._buffered.set(len(self.buffer))

    def _drop(self, reason: str, n: int, why: str = "") -> None:
        DROPPED.labels(self.sink.name, reason).inc(n)
        self._dropped_since_report[reason] = self._dropped_since_report.get(reason, 0) + n
        if why:
            log.warning("legacy %s sink refused %d events for good: %s", self.sink.name, n, why)
        self._report()

    def _report(self) -> None:
        now = time.monotonic()
        if self._dropped_since_report and now - self._reported_at >= REPORT_EVERY_S:
            said = ", ".join(f"{n} ({reason})" for reason, n in self._dropped_since_report.items())
            log.warning("legacy %s sink: dropped %s events in the last minute", self.sink.name, said)
            self._dropped_since_report.clear()
            self._reported_at = now

    async def close(self) -> None:
        """Send what is buffered for up to timeout_s, then count the rest dropped."""
        if self._task is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._drain(), self.timeout_s)
        # Counted before the task is stopped: a batch in flight then is as good as lost.
        left = self.waiting
        if self._task is not None:
            self._task.cancel()
        if left:
            self._drop("shutdown", left)
            self._reported_at = 0.0
            self._report()
        await self.sink.close()

    async def _drain(self) -> None:
        while self.waiting:
            await asyncio.sleep(0.05)
