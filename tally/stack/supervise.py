"""A small process supervisor: keeps a set of child processes running, as Kubernetes would.

`python -m tally.stack.supervise --pids-file F --child '<json argv>' [--child ...]`

A child that exits is restarted after a back-off (1 s doubling to 30 s, reset once it has run for
a minute). SIGTERM stops the children (SIGTERM, then SIGKILL after a grace period) and then the
supervisor. The pids of the running children are kept in the pids file for `tally status`.

Nothing outlives the supervisor (Linux): each child gets SIGTERM when the supervisor dies, however
it dies, and stops its own workers as it would on `tally down`. The supervisor is also the reaper of
its children's descendants: a worker whose parent was killed (uvicorn's workers when the uvicorn
main process is SIGKILLed) becomes the supervisor's child, and is stopped before a replacement of
that parent is started, since it still holds the port.
"""

from __future__ import annotations

import argparse
import ctypes
import functools
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

GRACE_S = 20.0
STABLE_S = 60.0
TICK_S = 0.2

# <linux/prctl.h>
PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36


# Loaded before any fork: the child between fork and exec should only make the call.
_libc = ctypes.CDLL(None, use_errno=True)


def _prctl(option: int, arg: int) -> None:
    if _libc.prctl(option, arg, 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def die_with_parent(parent: int) -> None:
    """Run in a child between fork and exec: have the kernel SIGTERM it when `parent` dies.

    The death signal survives exec but not fork, so the children's own workers are not covered;
    they are the reaper's (see `Orphans`). SIGTERM, the signal a normal stop sends: uvicorn then
    stops its workers itself, gracefully.
    """
    _prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    # If the parent died between fork and prctl, no signal will ever come: we were already
    # re-parented, so give up now rather than run unsupervised.
    if os.getppid() != parent:
        os._exit(128 + signal.SIGTERM)


class Child:
    def __init__(self, argv: list[str]):
        self.argv = argv
        self.proc: subprocess.Popen | None = None
        self.started = 0.0
        self.backoff = 1.0
        self.restart_at = 0.0

    def start(self) -> None:
        self.proc = subprocess.Popen(
            self.argv,
            stdin=subprocess.DEVNULL,
            # Its own process group, so a stuck child is SIGKILLed with everything it forked.
            process_group=0,
            # The death signal is tied to the thread that forks; the supervisor has only one.
            preexec_fn=functools.partial(die_with_parent, os.getpid()),
        )
        self.started = time.monotonic()

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill_group(self) -> None:
        # Only while the leader is unreaped: then its pid, the group's id, cannot have been reused.
        if self.running():
            os.killpg(self.proc.pid, signal.SIGKILL)


class Orphans:
    """Descendants re-parented to the supervisor because their own parent died: each gets SIGTERM,
    then SIGKILL after the grace period, and is reaped. Being our unreaped children, their pids
    cannot be reused while we signal them."""

    def __init__(self, children: list[Child]):
        self.children = children
        self.signalled: dict[int, float] = {}

    def pids(self) -> list[int]:
        ours = {c.proc.pid for c in self.children if c.proc is not None}
        return [p for p in _direct_children() if p not in ours]

    def sweep(self, grace_s: float = GRACE_S) -> bool:
        """Signal and reap what is due; True while some orphan remains."""
        now = time.monotonic()
        remaining = False
        for pid in self.pids():
            if os.waitpid(pid, os.WNOHANG)[0] == pid:
                log(f"reaped orphan pid {pid}")
                self.signalled.pop(pid, None)
                continue
            remaining = True
            if pid not in self.signalled:
                log(f"pid {pid} lost its parent; stopping it")
                os.kill(pid, signal.SIGTERM)
                self.signalled[pid] = now
            elif now - self.signalled[pid] > grace_s:
                os.kill(pid, signal.SIGKILL)
        return remaining


def _direct_children() -> list[int]:
    me = os.getpid()
    try:
        return [int(p) for p in Path(f"/proc/{me}/task/{me}/children").read_text().split()]
    except FileNotFoundError:  # a kernel built without CONFIG_PROC_CHILDREN
        found = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == me:
                    found.append(int(stat.parent.name))
            except (OSError, IndexError, ValueError):
                continue
        return found


def log(message: str) -> None:
    print(f"[supervise {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pids-file", type=Path, required=True)
    parser.add_argument("--child", action="append", required=True, help="JSON list: one child's argv")
    args = parser.parse_args()
    children = [Child(json.loads(c)) for c in args.child]
    orphans = Orphans(children)
    stopping = False

    def on_term(_sig, _frame):
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    _prctl(PR_SET_CHILD_SUBREAPER, 1)

    def write_pids() -> None:
        pids = [c.proc.pid for c in children if c.running()]
        args.pids_file.write_text("\n".join(map(str, pids)) + "\n")

    for c in children:
        c.start()
        log(f"started pid {c.proc.pid}: {' '.join(c.argv)}")
    write_pids()
    while not stopping:
        changed = False
        now = time.monotonic()
        # A replacement waits until the last generation's workers are gone: they may hold its port.
        orphaned = orphans.sweep()
        for c in children:
            if c.proc is not None and c.proc.poll() is not None:
                ran = now - c.started
                c.backoff = 1.0 if ran > STABLE_S else min(c.backoff * 2, 30.0)
                c.restart_at = now + c.backoff
                log(f"pid {c.proc.pid} exited with {c.proc.returncode} after {ran:.0f} s; restart in {c.backoff:.0f} s")
                c.proc = None
                changed = True
            if c.proc is None and now >= c.restart_at and not orphaned:
                c.start()
                log(f"restarted pid {c.proc.pid}")
                changed = True
        if changed:
            write_pids()
        time.sleep(TICK_S)
    stop(children, orphans)
    args.pids_file.unlink(missing_ok=True)
    log("stopped")


def stop(children: list[Child], orphans: Orphans) -> None:
    # Only the children themselves get SIGTERM: uvicorn stops its own workers, waiting for them.
    # Their process groups are SIGKILLed only if that has not finished within the grace period.
    for c in children:
        if c.running():
            c.proc.terminate()
    deadline = time.monotonic() + GRACE_S
    while time.monotonic() < deadline:
        remaining = orphans.sweep()
        if not remaining and not any(c.running() for c in children):
            return
        time.sleep(TICK_S)
    for c in children:
        c.kill_group()
        if c.proc is not None:
            c.proc.wait()
    while orphans.sweep(grace_s=0):
        time.sleep(TICK_S)


if __name__ == "__main__":
    main()
