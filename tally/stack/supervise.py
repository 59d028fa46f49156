"""A small process supervisor: keeps a set of child processes running, as Kubernetes would.

`python -m tally.stack.supervise --pids-file F --child '<json argv>' [--child ...]`

A child that exits is restarted after a back-off (1 s doubling to 30 s, reset once it has run for
a minute). SIGTERM stops the children (SIGTERM, then SIGKILL after a grace period) and then the
supervisor. The pids of the running children are kept in the pids file for `tally status`.
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

GRACE_S = 20.0
STABLE_S = 60.0


class Child:
    def __init__(self, argv: list[str]):
        self.argv = argv
        self.proc: subprocess.Popen | None = None
        self.started = 0.0
        self.backoff = 1.0
        self.restart_at = 0.0

    def start(self) -> None:
        self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL)
        self.started = time.monotonic()


def log(message: str) -> None:
    print(f"[supervise {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pids-file", type=Path, required=True)
    parser.add_argument("--child", action="append", required=True, help="JSON list: one child's argv")
    args = parser.parse_args()
    children = [Child(json.loads(c)) for c in args.child]
    stopping = False

    def on_term(_sig, _frame):
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)

    def write_pids() -> None:
        pids = [c.proc.pid for c in children if c.proc is not None and c.proc.poll() is None]
        args.pids_file.write_text("\n".join(map(str, pids)) + "\n")

    for c in children:
        c.start()
        log(f"started pid {c.proc.pid}: {' '.join(c.argv)}")
    write_pids()
    while not stopping:
        changed = False
        now = time.monotonic()
        for c in children:
            if c.proc is not None and c.proc.poll() is not None:
                ran = now - c.started
                c.backoff = 1.0 if ran > STABLE_S else min(c.backoff * 2, 30.0)
                c.restart_at = now + c.backoff
                log(f"pid {c.proc.pid} exited with {c.proc.returncode} after {ran:.0f} s; restart in {c.backoff:.0f} s")
                c.proc = None
                changed = True
            if c.proc is None and now >= c.restart_at:
                c.start()
                log(f"restarted pid {c.proc.pid}")
                changed = True
        if changed:
            write_pids()
        time.sleep(0.2)
    running = [c.proc for c in children if c.proc is not None and c.proc.poll() is None]
    for p in running:
        p.terminate()
    deadline = time.monotonic() + GRACE_S
    for p in running:
        try:
            p.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
    args.pids_file.unlink(missing_ok=True)
    log("stopped")


if __name__ == "__main__":
    main()
