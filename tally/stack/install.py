"""Getting a service's binaries onto a fresh machine: jars from Maven Central, Debian packages.

Each step is done once and is safe to repeat; a failure names the component and the reason.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from tally.settings import Settings
from tally.stack.service import StackError

_apt_updated = False


def say(component: str, message: str) -> None:
    print(f"  {component:<11} {message}", file=sys.stderr, flush=True)


def java_bin(settings: Settings, component: str) -> str:
    """The `java` to run Kafka/Cassandra with; must be Java 11 or 17."""
    home = settings.java_home or (Path(os.environ["JAVA_HOME"]) if os.environ.get("JAVA_HOME") else None)
    java = str(home / "bin" / "java") if home else shutil.which("java")
    if not java or not Path(java).exists():
        raise StackError(component, "no Java found; install OpenJDK 17 or set TALLY_JAVA_HOME")
    out = subprocess.run([java, "-version"], capture_output=True, text=True).stderr
    m = re.search(r'version "(\d+)', out)
    major = int(m.group(1)) if m else 0
    if major not in (11, 17):
        fallback = Path("/usr/lib/jvm/java-17-openjdk-amd64/bin/java")
        if fallback.exists() and not settings.java_home:
            return str(fallback)
        found = major or out.strip()
        raise StackError(component, f"needs Java 11 or 17, found {found!r} at {java}; set TALLY_JAVA_HOME")
    return java


def maven_libs(settings: Settings, component: str) -> Path:
    """Resolve a component's jars (profile `component` of deploy/local/pom.xml) into a lib/ folder."""
    lib = settings.state_dir / "lib" / component
    done = lib / ".resolved"
    pom = settings.deploy_dir / "local" / "pom.xml"
    # Re-resolve when the pom changes (a version bump), not on every start.
    stamp = str(pom.stat().st_mtime_ns) + ":" + str(pom.stat().st_size)
    if done.exists() and done.read_text() == stamp:
        return lib
    mvn = shutil.which("mvn")
    if not mvn:
        raise StackError(component, "Maven (mvn) is not installed; apt-get install maven")
    say(component, "resolving jars from Maven Central (first start downloads ~60 MB)...")
    if lib.exists():
        shutil.rmtree(lib)
    lib.mkdir(parents=True)
    cmd = [mvn, "-B", "-f", str(pom), f"-P{component}", f"-Dlib.dir={lib}", "dependency:copy-dependencies"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    tail: list[str] = []
    downloaded = 0
    assert proc.stdout is not None
    for line in proc.stdout:
        tail = (tail + [line.rstrip()])[-25:]
        if "Downloaded from" in line:
            downloaded += 1
            if downloaded % 25 == 0:
                say(component, f"... {downloaded} artifacts downloaded")
    if proc.wait() != 0:
        raise StackError(component, "Maven could not resolve the jars:\n" + "\n".join(tail))
    jars = len(list(lib.glob("*.jar")))
    done.write_text(stamp)
    say(component, f"{jars} jars ready ({downloaded} downloaded)")
    return lib


def apt_install(component: str, packages: list[str]) -> None:
    """Install Debian packages (the stack runs as root on these machines, as CI does)."""
    global _apt_updated
    if os.geteuid() != 0:
        raise StackError(component, f"needs the Debian packages {' '.join(packages)}; install them as root")
    if not shutil.which("apt-get"):
        raise StackError(component, f"needs {' '.join(packages)} and this machine has no apt-get")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    say(component, f"installing Debian packages: {' '.join(packages)} ...")
    if not _apt_updated:
        r = subprocess.run(["apt-get", "update", "-q"], capture_output=True, text=True, env=env)
        if r.returncode != 0:
            raise StackError(component, "apt-get update failed:\n" + r.stderr[-2000:])
        _apt_updated = True
    r = subprocess.run(
        ["apt-get", "install", "-y", "-q", "--no-install-recommends", *packages],
        capture_output=True,
        text=True,
        env=env,
    )
    if r.returncode != 0:
        raise StackError(component, f"apt-get install {' '.join(packages)} failed:\n" + (r.stderr or r.stdout)[-2000:])
