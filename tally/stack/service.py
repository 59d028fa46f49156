"""What every local service has in common: its folders, its pid file, starting, probing, stopping."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import signal
import socket
import subprocess
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tally.settings import Settings

# Every process of a stack, and everything it forks, carries this variable naming the stack's state
# dir, so `down` can be checked to leave nothing behind (children's command lines need not say).
STACK_ENV = "TALLY_STACK_DIR"
# ...and this one naming the component, so leftovers of one component can be told from another's
# (uvicorn's workers are `python -c "from multiprocessing.spawn import ..."`).
COMPONENT_ENV = "TALLY_COMPONENT"


class StackError(RuntimeError):
    """A service could not be installed, configured or started; the message says which and why."""

    def __init__(self, component: str, reason: str, log: Path | None = None):
        self.component = component
        self.reason = reason
        self.log = log
        where = f" (log: {log})" if log else ""
        super().__init__(f"{component}: {reason}{where}")


@dataclass
class Launch:
    """How to start a service's main process."""

    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    user: str | None = None  # run as this OS user (PostgreSQL refuses to run as root)
    cwd: Path | None = None


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def pid_alive(pid: int) -> bool:
    # Reap it if it is our own exited child, so it does not linger as a zombie.
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
    try:
        os.kill(pid, 0)
    except OSError as e:
        return e.errno == errno.EPERM
    # A zombie has exited; only its parent has not reaped it yet.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def carries(pid: int, marks: dict[str, str]) -> bool:
    """True if the process was started with every one of these environment entries."""
    try:
        environ = set(Path(f"/proc/{pid}/environ").read_bytes().split(b"\0"))
    except OSError:
        return False
    return all(f"{k}={v}".encode() in environ for k, v in marks.items())


def processes_carrying(marks: dict[str, str]) -> list[int]:
    """Every live process (other than this one) started with these environment entries."""
    # A zombie's environ reads empty, so the dead are not found.
    pids = [int(e.name) for e in Path("/proc").iterdir() if e.name.isdigit()]
    return [p for p in pids if p != os.getpid() and carries(p, marks)]


def stop_processes(pids: list[int], is_ours: Callable[[int], bool], grace_s: float) -> None:
    """SIGTERM, then SIGKILL after grace_s, whichever of pids is still ours at each signal: a pid
    found a moment ago may have been reused by a stranger."""

    def send(sig: signal.Signals, targets: list[int]) -> None:
        for pid in targets:
            if pid_alive(pid) and is_ours(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)

    send(signal.SIGTERM, pids)
    deadline = time.monotonic() + grace_s
    while any(pid_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.2)
    send(signal.SIGKILL, pids)
    while any(pid_alive(p) for p in pids) and time.monotonic() < deadline + 5:
        time.sleep(0.1)


class Service(ABC):
    """One local service. Subclasses fill in install/prepare/launch/probe."""

    name: str
    # Seconds a SIGTERM gets before SIGKILL: Cassandra and Kafka flush on a clean stop.
    stop_grace_s: float = 30.0
    # SIGTERM the whole process group (the service and any helpers it forked) on stop.
    signal_group_first: bool = True
    # Start order: stores (0) answer before Tally's own processes (1) start.
    tier: int = 0

    def __init__(self, settings: Settings):
        self.settings = settings

    # ---- where things live -------------------------------------------------------------------
    @property
    def home(self) -> Path:
        return self.settings.state_dir / self.name

    @property
    def data_dir(self) -> Path:
        return self.home / "data"

    @property
    def conf_dir(self) -> Path:
        return self.home / "conf"

    @property
    def log_file(self) -> Path:
        return self.settings.state_dir / "logs" / f"{self.name}.log"

    @property
    def pid_file(self) -> Path:
        return self.settings.state_dir / "run" / f"{self.name}.pid"

    @property
    @abstractmethod
    def port(self) -> int: ...

    @property
    def port_setting(self) -> str:
        return f"TALLY_{self.name.upper()}_PORT"

    @property
    def marks(self) -> dict[str, str]:
        """Environment entries that every process of this service, and all they fork, carry."""
        return {STACK_ENV: str(self.settings.state_dir), COMPONENT_ENV: self.name}

    # ---- what subclasses provide -------------------------------------------------------------
    @abstractmethod
    def install(self) -> None:
        """Make sure the binaries are present (download once); raise StackError if they cannot be."""

    @abstractmethod
    def prepare(self) -> None:
        """Write configs and initialise storage on first start; safe to repeat."""

    @abstractmethod
    def launch(self) -> Launch: ...

    @abstractmethod
    def probe(self) -> bool:
        """True when the service really answers a request (not merely an open port)."""

    def after_ready(self) -> None:  # noqa: B027 - optional hook, most services need nothing
        """Create what the project needs inside the service (topics, keyspace, database). Idempotent."""

    def stop_leftovers(self) -> list[int]:
        """Stop processes of ours that outlived the service's main process; their pids."""
        return []

    # ---- lifecycle ---------------------------------------------------------------------------
    def pid(self) -> int | None:
        """The pid of our running process, or None. A pid reused by a stranger does not count."""
        try:
            pid = int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None
        if pid_alive(pid) and str(self.home) in cmdline(pid):
            return pid
        return None

    def is_running(self) -> bool:
        return self.pid() is not None

    def pids(self) -> list[int]:
        """Every process doing the service's work (several for supervised services)."""
        pid = self.pid()
        return [pid] if pid else []

    def start(self) -> int:
        if port_in_use(self.port):
            raise StackError(
                self.name,
                f"port {self.port} is already in use by another process; "
                f"stop it or set {self.port_setting} to a free port",
            )
        for d in (self.home, self.data_dir, self.conf_dir, self.log_file.parent, self.pid_file.parent):
            d.mkdir(parents=True, exist_ok=True)
        spec = self.launch()
        env = {**os.environ, **spec.env, **self.marks}
        with open(self.log_file, "ab") as log:
            log.write(f"\n==== tally: starting {self.name} at {time.ctime()} ====\n".encode())
            log.flush()
            proc = subprocess.Popen(
                spec.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=spec.cwd or self.home,
                user=spec.user,
                # Its own session: a Ctrl-C in the shell that ran `tally stack up` does not reach it,
                # and `down` can signal the whole process group.
                start_new_session=True,
            )
        self.pid_file.write_text(f"{proc.pid}\n")
        return proc.pid

    def wait_ready(self, pid: int, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not pid_alive(pid):
                raise StackError(self.name, "exited during start-up; last lines:\n" + self.tail(15), self.log_file)
            if self.probe():
                return
            time.sleep(0.5)
        raise StackError(self.name, f"did not answer within {timeout_s:.0f} s", self.log_file)

    def stop(self) -> bool:
        """Stop our process (never someone else's). True if something was stopped."""
        pid = self.pid()
        if pid is None:
            self.pid_file.unlink(missing_ok=True)
            return False
        if self.signal_group_first:
            _signal_group(pid, signal.SIGTERM)
        else:
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + self.stop_grace_s
        while pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        if pid_alive(pid):
            _signal_group(pid, signal.SIGKILL)
            while pid_alive(pid):
                time.sleep(0.1)
        self.pid_file.unlink(missing_ok=True)
        return True

    def purge(self) -> None:
        shutil.rmtree(self.home, ignore_errors=True)
        self.log_file.unlink(missing_ok=True)

    def tail(self, n: int = 40) -> str:
        try:
            lines = self.log_file.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(lines[-n:])


def _signal_group(pid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        pass
    except PermissionError:
        os.kill(pid, sig)
