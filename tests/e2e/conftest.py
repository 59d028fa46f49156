"""End-to-end: events in through the API, answers out of the API, through the whole real pipeline."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import uuid
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from tally.auth.devissuer import bearer

UI_DIR = Path(__file__).parent.parent / "ui"


@pytest.fixture(scope="session")
def driver() -> Callable[..., dict]:
    """Runs a playwright-core script of tests/ui against Debian's Chromium (npm fetches no browser)
    and returns the JSON it prints last."""
    chromium, node, npm = shutil.which("chromium"), shutil.which("node"), shutil.which("npm")
    if not (chromium and node and npm):
        pytest.fail("the browser tests need chromium, node and npm (make test installs them)")
    if not (UI_DIR / "node_modules" / "playwright-core").exists():
        subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=UI_DIR, check=True, capture_output=True)

    def run(script: str, *args: str) -> dict:
        out = subprocess.run([node, str(UI_DIR / script), *args], capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout.strip().splitlines()[-1])

    return run


@pytest.fixture(scope="session")
def api(stack) -> httpx.Client:
    # Every scope, from the stack's development issuer: tests of auth itself send their own headers.
    with httpx.Client(base_url=f"http://127.0.0.1:{stack.api_port}", timeout=30, headers=bearer(stack)) as client:
        yield client


@pytest.fixture
def run_id() -> str:
    """A prefix that makes this test's event types its own, so tests never see each other's events."""
    return f"t{uuid.uuid4().hex[:8]}"


def iso(t: datetime) -> str:
    return t.astimezone(UTC).isoformat().replace("+00:00", "Z")


def minute_cells(body: dict, metric: str = "count") -> Counter:
    """An /api/aggregate answer grouped by event_type,source, as {(minute "YYYY-MM-DDTHH:MM", type,
    source): value} for the points where `metric` is not 0."""
    out: Counter = Counter()
    for s in body["series"]:
        for p in s["points"]:
            if p[metric]:
                t = datetime.fromisoformat(p["t"]).astimezone(UTC).strftime("%Y-%m-%dT%H:%M")
                out[(t, s["group"]["event_type"], s["group"]["source"])] = p[metric]
    return out


def recent_window() -> tuple[datetime, datetime]:
    """Two whole minutes ending at the current minute: recent enough never to be late."""
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    return now - timedelta(minutes=2), now


def wait_for(check: Callable[[], bool], timeout_s: float = 45, what: str = "condition") -> float:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout_s:
        if check():
            return time.monotonic() - t0
        time.sleep(0.25)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
