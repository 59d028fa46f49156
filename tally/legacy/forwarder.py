"""Dual write: every event the API accepted is also forwarded to the legacy side, in the background.

Ingest never waits for the legacy side: `offer` only appends to a bounded buffer (one per API
worker, bounded in events and in bytes) and returns. A task sends the buffer in batches:
- while the legacy side cannot be reached, the batch waits for it (backoff up to 5 s) and the buffer
  keeps filling; once it is full, further events are dropped for the legacy side only (Tally has them);
- a batch the legacy side reached but failed (an error, a timeout) is tried three times, then split in
  halves, so that one event it cannot take never holds up the others; that event alone is dropped;
- a batch it refuses for good is split the same way, down to the events refused.
Every drop is counted by reason in tally_legacy_dropped_events_total and logged once a minute,
never silent: buffer_full, refused, failed, or shutdown (still buffered when the worker stopped
and not sent within legacy_timeout_s).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Sequence

from prometheus_client import Counter, Gauge

from tally.legacy.sinks import LegacySink, Refused, Unreachable

log = logging.getLogger("tally.legacy")

FORWARDED = Counter("tally_legacy_forwarded_events_total", "Events the legacy side acknowledged", ["sink"])
DROPPED = Counter(
    "tally_legacy_dropped_events_total", "Accepted events not forwarded to the legacy side", ["sink", "reason"]
)
FAILURES = Counter("tally_legacy_send_failures_total", "Requests to the legacy side that failed (retried)", ["sink"])
BUFFERED = Gauge(
    "tally_legacy_buffered_events", "Events waiting to be forwarded", ["sink"], multiprocess_mode="livesum"
)

BACKOFF_S = (0.2, 0.5, 1.0, 2.0, 5.0)
TRIES = 3  # of a batch the legacy side reached but failed, before it is split
REPORT_EVERY_S = 60.0
# A batch carries at most this many bytes, whatever legacy_batch_events says: events can be up to
# 64 KiB as sent (tally.api.routes.events), and a request or COPY must stay a sane size.
BATCH_BYTES = 8 << 20


class DualWriter:
    def __init__(self, sink: LegacySink, capacity: int, batch: int, timeout_s: float, capacity_bytes: int):
        self.sink = sink
        self.capacity = capacity
        self.capacity_bytes = capacity_bytes
        self.batch = batch
        self.timeout_s = timeout_s
        self.buffer: deque[bytes] = deque()
        self.bytes = 0  # of the buffer and of the batch in flight
        self.sending = 0  # events of the batch in flight not forwarded or dropped yet
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
        size = sum(map(len, values))
        if len(values) <= room and self.bytes + size <= self.capacity_bytes:
            self.buffer.extend(values)
            self.bytes += size
        else:
            taken = 0
            for v in values[: max(room, 0)]:
                if self.bytes + len(v) > self.capacity_bytes:
                    break
                self.buffer.append(v)
                self.bytes += len(v)
                taken += 1
            self._drop("buffer_full", len(values) - taken)
        self._buffered.set(self.waiting)
        self._wake.set()

    @property
    def waiting(self) -> int:
        return len(self.buffer) + self.sending

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self.buffer:
                values, size = [], 0
                while self.buffer and len(values) < self.batch and (not values or size < BATCH_BYTES):
                    v = self.buffer.popleft()
                    values.append(v)
                    size += len(v)
                self.sending = len(values)
                try:
                    await self._deliver(values)
                finally:
                    self.bytes -= size
                    self._buffered.set(self.waiting)

    async def _deliver(self, values: list[bytes]) -> None:
        """Forward `values`, or drop (counted) those the legacy side cannot take."""
        attempt = 0
        while True:
            try:
                await asyncio.wait_for(self.sink.send(values), self.timeout_s)
                FORWARDED.labels(self.sink.name).inc(len(values))
                self.sending -= len(values)
                return
            except Refused as e:
                if len(values) == 1:
                    self._drop("refused", 1, str(e))
                    self.sending -= 1
                    return
                break
            except Exception as e:  # noqa: BLE001 - anything else may pass on a retry
                FAILURES.labels(self.sink.name).inc()
                if attempt == 0:
                    log.warning("legacy %s sink failed, retrying: %s", self.sink.name, e or type(e).__name__)
                self._report()
                attempt += 1
                if isinstance(e, Unreachable) or attempt < TRIES:
                    await asyncio.sleep(BACKOFF_S[min(attempt - 1, len(BACKOFF_S) - 1)])
                    continue
                if len(values) == 1:
                    self._drop("failed", 1, f"{e or type(e).__name__}")
                    self.sending -= 1
                    return
                break
        half = len(values) // 2
        await self._deliver(values[:half])
        await self._deliver(values[half:])

    def _drop(self, reason: str, n: int, why: str = "") -> None:
        if not n:
            return
        DROPPED.labels(self.sink.name, reason).inc(n)
        if why and not self._dropped_since_report.get(reason):
            # The first of its kind since the last report: the reason, once, not per event.
            log.warning("legacy %s sink could not take an event (%s): %s", self.sink.name, reason, why)
        self._dropped_since_report[reason] = self._dropped_since_report.get(reason, 0) + n
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
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        # The task is stopped: what it had not forwarded is as good as lost.
        left = self.waiting
        if left:
            self._drop("shutdown", left)
            self._reported_at = 0.0
            self._report()
        await self.sink.close()

    async def _drain(self) -> None:
        while self.waiting:
            await asyncio.sleep(0.05)
