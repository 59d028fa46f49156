"""CPU and RSS of every component of the running stack, sampled from /proc."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

TICK = os.sysconf("SC_CLK_TCK")


def component_pids() -> dict[str, list[int]]:
    out = subprocess.run([sys.executable, "-m", "tally.cli", "status", "--json"], capture_output=True, text=True)
    comps = json.loads(out.stdout)["components"]
    # A JMX agent (`within` its JVM) has the JVM's pid: its cost is in the JVM's figure.
    return {c["name"]: [c["pid"], *(c.get("pids") or [])] for c in comps if c.get("pid") and not c.get("within")}


def tree(pids: list[int]) -> set[int]:
    """The pids and all their descendants."""
    children: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(d.name))
    seen, todo = set(), list(pids)
    while todo:
        p = todo.pop()
        if p not in seen:
            seen.add(p)
            todo += children.get(p, [])
    return seen


def cpu_rss(pids: set[int]) -> tuple[float, int]:
    cpu, rss = 0.0, 0
    for p in pids:
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            # utime + stime, and cutime + cstime: children that exited meanwhile (a Dagster run's
            # process, a restarted worker) count for whoever reaped them.
            cpu += sum(int(f) for f in fields[11:15]) / TICK
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    rss += int(line.split()[1]) * 1024
        except (OSError, IndexError, ValueError):
            pass
    return cpu, rss


class Sampler:
    """Samples every component once a second while running; reports CPU % and peak RSS."""

    def __init__(self):
        self.groups = {name: tree(pids) for name, pids in component_pids().items()}
        self.start = {n: cpu_rss(p)[0] for n, p in self.groups.items()}
        self.peak = {n: 0 for n in self.groups}
        self.t0 = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(1.0):
            for n, p in self.groups.items():
                self.peak[n] = max(self.peak[n], cpu_rss(p)[1])

    def stop(self) -> dict:
        self._stop.set()
        self._thread.join()
        seconds = time.monotonic() - self.t0
        out = {}
        for n, p in self.groups.items():
            cpu, rss = cpu_rss(p)
            out[f"{n}_cpu_pct"] = round(100 * (cpu - self.start[n]) / seconds, 1)
            out[f"{n}_rss_mib"] = round(max(rss, self.peak[n]) / 2**20)
        return out
