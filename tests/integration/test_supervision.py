"""Nothing Tally starts outlives its supervisor, and `up` clears what an older one left behind.

Each test has its own state dir and ports; the API tests use the shared stack's stores but never
its API or dataflow, and no dataflow is started here (it would consume the shared topic).
"""

from __future__ import annotations

import functools
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tally.settings import Settings
from tally.stack import runner
from tally.stack.apps import Api
from tally.stack.service import STACK_ENV, pid_alive, port_in_use, processes_carrying
from tally.stack.supervise import die_with_parent

MARK = "TALLY_TEST_SUPERVISION"

LOOP = "import time\nwhile True: time.sleep(1)"
# What uvicorn --workers does: a spawned worker (and multiprocessing's resource tracker), stopped
# by the main process when it gets SIGTERM.
WITH_WORKER = """
import multiprocessing, signal, sys, time
worker = multiprocessing.get_context("spawn").Process(target=time.sleep, args=(600,))
worker.start()
def stop(*_):
    worker.terminate()
    worker.join()
    sys.exit(0)
signal.signal(signal.SIGTERM, stop)
while True:
    time.sleep(1)
"""


def wait_until(predicate, timeout_s: float, what: str):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        time.sleep(0.1)
    raise AssertionError(f"not within {timeout_s:.0f} s: {what}")


def parent_of(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def children_of(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if parent_of(int(stat.parent.name)) == pid and pid_alive(int(stat.parent.name)):
                found.append(int(stat.parent.name))
        except (OSError, ValueError):
            continue
    return found


@pytest.fixture
def marks(tmp_path):
    """Environment entries that tag every process a test starts; whatever carries them is killed at the end."""
    tag = {MARK: str(tmp_path)}
    yield tag
    for pid in processes_carrying(tag):
        os.kill(pid, signal.SIGKILL)


def supervise(tmp_path: Path, marks: dict, *programs: str) -> subprocess.Popen:
    argv = [sys.executable, "-m", "tally.stack.supervise", "--pids-file", str(tmp_path / "children.pids")]
    for program in programs:
        argv += ["--child", json.dumps([sys.executable, "-c", program])]
    with open(tmp_path / "supervise.log", "ab") as log:
        return subprocess.Popen(
            argv, env={**os.environ, **marks}, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )


def listed_children(tmp_path: Path) -> list[int]:
    try:
        return [int(p) for p in (tmp_path / "children.pids").read_text().split()]
    except (OSError, ValueError):
        return []


def test_children_and_their_workers_die_when_the_supervisor_is_killed(tmp_path, marks):
    sup = supervise(tmp_path, marks, LOOP, WITH_WORKER)
    wait_until(lambda: len(listed_children(tmp_path)) == 2, 10, "both children started")
    main = listed_children(tmp_path)[1]
    workers = wait_until(lambda: children_of(main), 20, "the child spawned its worker")
    tree = set(processes_carrying(marks))
    assert {sup.pid, *listed_children(tmp_path), *workers} <= tree

    sup.kill()
    sup.wait()

    wait_until(lambda: not processes_carrying(marks), 10, "every child and worker gone")


def test_workers_of_a_killed_child_are_stopped_before_it_is_restarted(tmp_path, marks):
    sup = supervise(tmp_path, marks, WITH_WORKER)
    main = wait_until(lambda: listed_children(tmp_path), 10, "child started")[0]
    workers = wait_until(lambda: children_of(main), 20, "the child spawned its worker")

    os.kill(main, signal.SIGKILL)

    replacement = wait_until(
        lambda: [p for p in listed_children(tmp_path) if p != main and pid_alive(p)], 20, "child restarted"
    )[0]
    assert not any(pid_alive(w) for w in workers), "the dead child's workers must not outlive it"
    assert wait_until(lambda: children_of(replacement), 20, "the replacement spawned its worker")

    sup.terminate()
    sup.wait(timeout=30)
    assert processes_carrying(marks) == [], "a stopped supervisor leaves no child or worker behind"


def test_a_child_whose_supervisor_died_before_it_ran_exits_instead_of_running_unsupervised(tmp_path):
    ran = tmp_path / "ran"
    not_our_parent = os.getppid()  # the child's parent is this process, as if the supervisor were gone
    r = subprocess.run(
        [sys.executable, "-c", f"open({str(ran)!r}, 'w')"],
        preexec_fn=functools.partial(die_with_parent, not_our_parent),
    )
    assert r.returncode == 128 + signal.SIGTERM
    assert not ran.exists()


# ---- the real API, on its own port and state dir, against the shared stack's stores -------------


@pytest.fixture
def api_on(stack, tmp_path, monkeypatch):
    """Settings for an API of the test's own on the given port; it is stopped at the end."""
    made = []

    def settings_for(port: int) -> Settings:
        # Through the environment, so the API's own processes read the same settings.
        monkeypatch.setenv("TALLY_STATE_DIR", str(tmp_path))
        monkeypatch.setenv("TALLY_API_PORT", str(port))
        monkeypatch.setenv("TALLY_DATAFLOW_METRICS_PORT", "29101")
        made.append(Settings())
        return made[-1]

    yield settings_for
    for settings in made:
        runner.down(settings, ["api"])
    for pid in processes_carrying({STACK_ENV: str(tmp_path)}):
        os.kill(pid, signal.SIGKILL)


def start_api(settings: Settings) -> Api:
    [result] = runner.up(settings, ["api"])
    assert result.ok, result.message
    return Api(settings)


def test_killing_the_api_supervisor_stops_uvicorn_and_its_workers_and_up_reuses_the_port(api_on, capsys):
    api_settings = api_on(28000)
    api = start_api(api_settings)
    supervisor, [main] = api.pid(), api.pids()
    workers = children_of(main)
    assert len(workers) >= api_settings.api_workers
    ours = {STACK_ENV: str(api_settings.state_dir)}

    os.kill(supervisor, signal.SIGKILL)

    wait_until(lambda: not processes_carrying(ours), 30, "uvicorn and its workers gone")
    assert not port_in_use(api_settings.api_port)
    capsys.readouterr()
    again = start_api(api_settings)
    assert again.pid() not in (None, supervisor) and again.probe()
    assert "left running" not in capsys.readouterr().err, "nothing should have been left to clean up"


def test_up_stops_api_workers_that_outlived_both_their_supervisor_and_uvicorn(api_on, capsys):
    api_settings = api_on(28001)
    api = start_api(api_settings)
    supervisor, [main] = api.pid(), api.pids()
    workers = children_of(main)
    # The double failure no death signal covers: uvicorn's main process dies while the supervisor
    # cannot act (frozen here), then the supervisor dies too; the workers keep the port.
    os.kill(supervisor, signal.SIGSTOP)
    os.kill(main, signal.SIGKILL)
    wait_until(lambda: all(parent_of(w) == supervisor for w in workers), 10, "workers re-parented")
    os.kill(supervisor, signal.SIGKILL)
    wait_until(lambda: not pid_alive(supervisor), 10, "supervisor gone")
    assert all(pid_alive(w) for w in workers) and port_in_use(api_settings.api_port)
    capsys.readouterr()

    again = start_api(api_settings)

    assert "stopped processes left running by a previous start" in capsys.readouterr().err
    assert not any(pid_alive(w) for w in workers)
    assert again.probe()
