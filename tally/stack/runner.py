"""Bringing the whole local stack up, down, and reporting on it."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

from tally.settings import Settings
from tally.stack.apps import Api, Dataflow, Supervised
from tally.stack.cassandra import Cassandra
from tally.stack.exporters import NodeExporter, PostgresExporter, scrape_ok
from tally.stack.install import say
from tally.stack.kafka import Kafka
from tally.stack.orchestrator import Dagster
from tally.stack.postgres import Postgres
from tally.stack.prometheus import Prometheus
from tally.stack.service import STACK_ENV, Service, StackError, cmdline, pid_alive


def services(settings: Settings) -> list[Service]:
    # Start order: the slow JVMs first, so their start-up overlaps with everything else; then
    # Tally's own processes, which need the stores (see Service.tier).
    return [
        Cassandra(settings),
        Kafka(settings),
        Postgres(settings),
        Prometheus(settings),
        PostgresExporter(settings),
        NodeExporter(settings),
        Api(settings),
        Dataflow(settings),
        Dagster(settings),
    ]


def select(settings: Settings, names: list[str] | None) -> list[Service]:
    all_ = services(settings)
    if not names:
        return all_
    known = {s.name: s for s in all_}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise StackError(unknown[0], f"unknown component; choose from {', '.join(known)}")
    return [known[n] for n in names]


@dataclass
class ComponentStatus:
    name: str
    status: str  # "up" or "down"
    pid: int | None
    port: int
    detail: str = ""
    pids: list[int] | None = None  # for components that run several processes
    within: str = ""  # a metrics agent inside another component's process (its pid is that one's)

    def as_dict(self) -> dict:
        d = asdict(self)
        for optional in ("detail", "pids", "within"):
            if not d[optional]:
                del d[optional]
        return d


def status(settings: Settings, names: list[str] | None = None) -> list[ComponentStatus]:
    out = []
    for svc in select(settings, names):
        pid = svc.pid()
        if pid is None:
            out.append(ComponentStatus(svc.name, "down", None, svc.port, "not running"))
        elif svc.probe():
            pids = svc.pids() if isinstance(svc, Supervised) else None
            out.append(ComponentStatus(svc.name, "up", pid, svc.port, pids=pids))
        else:
            detail = f"running but not answering; see {svc.log_file}"
            out.append(ComponentStatus(svc.name, "down", pid, svc.port, detail))
        if port := getattr(svc, "metrics_port", None):
            out.append(_agent_status(svc, pid, port))
    return out


def _agent_status(svc: Service, pid: int | None, port: int) -> ComponentStatus:
    """The JMX exporter inside a JVM: up when its port serves metrics."""
    name = f"{svc.name}-metrics"
    if pid is None:
        return ComponentStatus(name, "down", None, port, f"{svc.name} is not running", within=svc.name)
    if scrape_ok(port):
        return ComponentStatus(name, "up", pid, port, f"JMX exporter in {svc.name}'s JVM", within=svc.name)
    detail = f"{svc.name}'s JVM does not serve metrics on this port"
    return ComponentStatus(name, "down", pid, port, detail, within=svc.name)


@dataclass
class UpResult:
    name: str
    ok: bool
    seconds: float
    message: str


def up(settings: Settings, names: list[str] | None = None) -> list[UpResult]:
    """Start what is not running, wait until every service answers. Idempotent; never raises for one
    failed service, so a half-started stack still reports which part failed."""
    chosen = select(settings, names)
    t0 = time.monotonic()
    results: dict[str, UpResult] = {}
    for tier in sorted({s.tier for s in chosen}):
        if tier > 0 and not all(r.ok for r in results.values()):
            for svc in chosen:
                if svc.tier == tier:
                    msg = f"{svc.name}: not started because a store failed"
                    results[svc.name] = UpResult(svc.name, False, time.monotonic() - t0, msg)
            continue
        _up_tier(settings, [s for s in chosen if s.tier == tier], results, t0)
    return [results[s.name] for s in chosen]


def _up_tier(settings: Settings, chosen: list[Service], results: dict[str, UpResult], t0: float) -> None:
    started: dict[str, int] = {}
    already: set[str] = set()
    for svc in chosen:
        pid = svc.pid()
        if pid is not None:
            started[svc.name] = pid
            already.add(svc.name)
            continue
        try:
            # Before prepare(): the API's prepare empties a folder its old workers still write to.
            if leftovers := svc.stop_leftovers():
                pids = ", ".join(map(str, leftovers))
                say(svc.name, f"stopped processes left running by a previous start (pids {pids})")
            svc.install()
            svc.prepare()
            started[svc.name] = svc.start()
            say(svc.name, f"starting (pid {started[svc.name]}, log {svc.log_file})")
        except StackError as e:
            results[svc.name] = UpResult(svc.name, False, time.monotonic() - t0, str(e))
    for svc in chosen:
        if svc.name in results:
            continue
        try:
            svc.wait_ready(started[svc.name], settings.start_timeout_s)
            svc.after_ready()
            msg = "already up" if svc.name in already else "up"
            results[svc.name] = UpResult(svc.name, True, time.monotonic() - t0, f"{msg} on port {svc.port}")
        except StackError as e:
            results[svc.name] = UpResult(svc.name, False, time.monotonic() - t0, str(e))
        except Exception as e:  # a driver error while creating topics/schema
            results[svc.name] = UpResult(
                svc.name, False, time.monotonic() - t0, f"{svc.name}: {e} (log: {svc.log_file})"
            )


def down(settings: Settings, names: list[str] | None = None, purge: bool = False) -> list[str]:
    """Stop only the processes this stack started (pid files); with purge, delete their data too."""
    stopped = []
    # Reverse start order: producers of load before the stores they write to.
    for svc in reversed(select(settings, names)):
        if svc.stop():
            stopped.append(svc.name)
        if purge:
            svc.purge()
    return stopped


def our_processes(settings: Settings) -> list[tuple[int, str]]:
    """Every live process whose command line names this stack's state directory."""
    from pathlib import Path

    marker = str(settings.state_dir.resolve())
    env_marker = f"{STACK_ENV}={settings.state_dir}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            pid = int(entry.name)
            line = cmdline(pid)
            try:
                inherited = env_marker in (entry / "environ").read_bytes().split(b"\0")
            except OSError:
                inherited = False
            if (marker in line or inherited) and pid_alive(pid):
                found.append((pid, line[:120]))
    return found
