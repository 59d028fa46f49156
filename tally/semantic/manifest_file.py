"""The named metrics an API worker serves: read from dbt's target/semantic_manifest.json at start and
again whenever the file changes (looked at once every CHECK_EVERY_S at most, on the requests that use
it), so a metric added with `make metrics` is served within seconds, without a restart.

A file that cannot be read as a whole (half written, not JSON, not a semantic manifest) or that went
away leaves the last valid catalog in service, and the reason is logged and shown by /api/metrics.
Single metrics Tally cannot compute are refused one by one (tally.semantic.catalog), logged too.
With no file at all, there are no named metrics: the built-in ones work as ever.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from tally.semantic.catalog import Catalog, ManifestError, load

CHECK_EVERY_S = 2.0
log = logging.getLogger("tally.semantic")


class ManifestFile:
    def __init__(self, path: Path, check_every_s: float = CHECK_EVERY_S, clock: Callable[[], float] = time.monotonic):
        self.path = path
        self.check_every_s = check_every_s
        self.clock = clock
        self.catalog = Catalog()
        self.loaded_at: datetime | None = None  # when the catalog in service was read
        self.modified_at: datetime | None = None  # the file's mtime then
        self.problem: str | None = None  # why the file on disk is not what is served, if it is not
        self._seen: tuple | None = None  # (mtime_ns, size, inode) of the file last read
        self._next_check = 0.0
        self.current()

    def current(self) -> Catalog:
        """The catalog to answer with, reloaded first if the file changed since it was last read."""
        now = self.clock()
        if now >= self._next_check:
            self._next_check = now + self.check_every_s
            self._check()
        return self.catalog

    def _check(self) -> None:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            if self._seen is not None:
                self._seen = None
                self._reject(f"{self.path} is gone; serving {self._kept()}")
            return
        except OSError as e:
            self._reject(f"cannot read {self.path}: {e}")
            return
        # Taken before reading: a file still being written is read again once its writer is done.
        seen = (st.st_mtime_ns, st.st_size, st.st_ino)
        if seen == self._seen:
            return
        self._seen = seen
        try:
            catalog = load(self.path.read_bytes())
        except (OSError, ManifestError) as e:
            self._reject(f"{self.path} is not a valid semantic manifest ({e}); serving {self._kept()}")
            return
        self.catalog = catalog
        self.loaded_at = datetime.now(UTC)
        self.modified_at = datetime.fromtimestamp(st.st_mtime, UTC)
        self.problem = None
        for name, why in catalog.refused.items():
            log.warning("named metric %s is not served: %s", name, why)
        log.info("named metrics from %s: %s", self.path, ", ".join(catalog.names) or "none")

    def _kept(self) -> str:
        return f"the metrics read at {self.loaded_at:%H:%M:%S} UTC" if self.loaded_at else "no named metrics"

    def _reject(self, problem: str) -> None:
        if problem != self.problem:
            log.warning("%s", problem)
        self.problem = problem
