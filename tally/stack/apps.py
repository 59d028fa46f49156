"""Tally's own processes in the local stack: the API and the dataflow, each under a supervisor
(tally.stack.supervise) that restarts what dies."""

from __future__ import annotations

import json
import shutil
import sys
import urllib.request

from tally.stack.dbt import parse_dbt_project
from tally.stack.install import say
from tally.stack.service import (
    Launch,
    Service,
    StackError,
    carries,
    cmdline,
    pid_alive,
    processes_carrying,
    stop_processes,
)


class Supervised(Service):
    """A service whose main process is a supervisor of one or more children."""

    stop_grace_s = 30.0
    signal_group_first = False  # the supervisor stops its children itself, so none is restarted mid-stop
    tier = 1  # started once the stores answer

    def install(self) -> None:
        pass

    @property
    def children_file(self):
        return self.home / "children.pids"

    def children(self) -> list[list[str]]:
        raise NotImplementedError

    def env(self) -> dict[str, str]:
        return {}

    def launch(self) -> Launch:
        argv = [sys.executable, "-m", "tally.stack.supervise", "--pids-file", str(self.children_file)]
        for child in self.children():
            argv += ["--child", json.dumps(child)]
        return Launch(argv, env={**self.settings.as_env(), **self.env()})

    def pids(self) -> list[int]:
        return [p for p in self._listed() if pid_alive(p)]

    def _listed(self) -> list[int]:
        try:
            return [int(x) for x in self.children_file.read_text().split()]
        except (OSError, ValueError):
            return []

    def stop(self) -> bool:
        stopped = super().stop()
        # A supervisor SIGKILLed after its grace period could not finish stopping its children.
        return bool(self.stop_leftovers()) or stopped

    def stop_leftovers(self) -> list[int]:
        """Stop what a previous supervisor of this component left running; call only while none runs.

        Children die with their supervisor, but not if they ignore SIGTERM, nor workers whose own
        parent was SIGKILLed at the same time, nor children of a Tally from before that was so."""
        found = self.leftovers()
        if found:
            stop_processes(found, self._is_leftover, self.stop_grace_s)
        return found

    def leftovers(self) -> list[int]:
        listed = [p for p in self._listed() if self._is_leftover(p)]
        return sorted(set(listed + processes_carrying(self.marks)))

    def _is_leftover(self, pid: int) -> bool:
        # Either it carries this component's marks, or the children file lists it and its command
        # line is exactly one of ours (what the file held before the marks existed).
        argvs = {" ".join(argv) for argv in self.children()}
        return carries(pid, self.marks) or (pid in self._listed() and cmdline(pid).rstrip() in argvs)


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status == 200
    except Exception:
        return False


class Api(Supervised):
    name = "api"

    @property
    def port(self) -> int:
        return self.settings.api_port

    @property
    def metrics_dir(self):
        return self.home / "prometheus-multiproc"

    def prepare(self) -> None:
        # prometheus_client's multiprocess files must start empty, or dead workers' counts linger.
        shutil.rmtree(self.metrics_dir, ignore_errors=True)
        self.metrics_dir.mkdir(parents=True)
        # The named metrics come from the dbt project's semantic manifest, written here so the API
        # has them without Dagster. A project that does not parse keeps the manifest it had: the API
        # starts anyway, with the metrics of the last one that did (or only the built-in ones).
        try:
            parse_dbt_project(self.settings, component=self.name)
        except StackError as e:
            say(self.name, f"named metrics unchanged: {e}")

    def env(self) -> dict[str, str]:
        return {"PROMETHEUS_MULTIPROC_DIR": str(self.metrics_dir)}

    def children(self) -> list[list[str]]:
        s = self.settings
        return [
            [
                sys.executable,
                "-m",
                "uvicorn",
                "--factory",
                "tally.api.app:create_app",
                "--host",
                "127.0.0.1",
                "--port",
                str(s.api_port),
                "--workers",
                str(s.api_workers),
                "--no-access-log",
                "--timeout-graceful-shutdown",
                "10",
            ]
        ]

    def probe(self) -> bool:
        return http_ok(f"http://127.0.0.1:{self.port}/healthz")


class Dataflow(Supervised):
    name = "dataflow"

    @property
    def port(self) -> int:
        return self.settings.dataflow_metrics_port

    @property
    def port_setting(self) -> str:
        return "TALLY_DATAFLOW_METRICS_PORT"

    def prepare(self) -> None:
        pass

    def children(self) -> list[list[str]]:
        n = self.settings.dataflow_processes
        return [[sys.executable, "-m", "dataflows.flow", "--process", str(i), "--processes", str(n)] for i in range(n)]

    def probe(self) -> bool:
        ports = [self.port + i for i in range(self.settings.dataflow_processes)]
        return all(http_ok(f"http://127.0.0.1:{p}/metrics") for p in ports)
