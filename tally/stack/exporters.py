"""The services' Prometheus exporters: PostgreSQL's and the node's from Debian's packages, and the
JMX exporter loaded as a Java agent into Kafka's and Cassandra's JVMs (configs in deploy/prometheus/).

They run beside the stores (tier 1, started once the stores answer) and are listed by `tally
status` like any component; the JMX agents live and die with their JVM, so status probes their port."""

from __future__ import annotations

import shutil
import urllib.request
from urllib.parse import quote

from tally.settings import Settings
from tally.stack.install import apt_install, maven_libs
from tally.stack.service import Launch, Service, StackError, carries, pid_alive


def scrape_ok(port: int, timeout_s: float = 3.0) -> bool:
    """True when something serves Prometheus' text format on 127.0.0.1:port/metrics."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=timeout_s) as r:
            return r.status == 200
    except Exception:
        return False


def jmx_agent(settings: Settings, component: str, port: int) -> str:
    """The -javaagent argument that serves the JVM's metrics (the MBeans in deploy/prometheus/jmx/
    <component>.yml) on 127.0.0.1:port."""
    lib = maven_libs(settings, "jmx-exporter")
    jar = next(lib.glob("jmx_prometheus_javaagent-*.jar"), None)
    if jar is None:
        raise StackError(component, f"the JMX exporter jar is missing from {lib}; delete that folder to re-resolve")
    config = settings.deploy_dir / "prometheus" / "jmx" / f"{component}.yml"
    return f"-javaagent:{jar}=127.0.0.1:{port}:{config}"


class _DebianExporter(Service):
    """An exporter binary from a Debian package, run in the foreground by the stack."""

    package: str
    tier = 1
    stop_grace_s = 10.0

    def install(self) -> None:
        if not shutil.which(self.package):
            apt_install(self.name, [self.package])
        binary = shutil.which(self.package)
        if not binary:
            raise StackError(self.name, f"{self.package} is not on PATH after installing it")
        self.binary = binary

    def prepare(self) -> None:
        pass

    def pid(self) -> int | None:
        # Their command lines name no path of the stack, so the environment tells ours apart.
        try:
            pid = int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None
        return pid if pid_alive(pid) and carries(pid, self.marks) else None

    def probe(self) -> bool:
        return scrape_ok(self.port)


class PostgresExporter(_DebianExporter):
    """PostgreSQL's activity and Tally's own tables (stored offsets, late events, operation runs)."""

    name = "postgres-exporter"
    package = "prometheus-postgres-exporter"

    @property
    def port(self) -> int:
        return self.settings.postgres_exporter_port

    @property
    def port_setting(self) -> str:
        return "TALLY_POSTGRES_EXPORTER_PORT"

    def launch(self) -> Launch:
        s = self.settings
        dsn = (
            f"postgresql://{quote(s.pg_user)}:{quote(s.pg_password)}@{s.pg_host}:{s.pg_port}/"
            f"{quote(s.pg_database)}?sslmode=disable"
        )
        argv = [
            self.binary,
            f"--web.listen-address=127.0.0.1:{self.port}",
            f"--extend.query-path={s.deploy_dir / 'prometheus' / 'postgres_queries.yml'}",
            # pg_settings_* is ~300 series of configuration nobody alerts on.
            "--disable-settings-metrics",
        ]
        return Launch(argv, env={"DATA_SOURCE_NAME": dsn})


class NodeExporter(_DebianExporter):
    """The machine: disk space (the state directory's filesystem above all), CPU, memory, load."""

    name = "node-exporter"
    package = "prometheus-node-exporter"

    @property
    def port(self) -> int:
        return self.settings.node_exporter_port

    def launch(self) -> Launch:
        collectors = ("filesystem", "cpu", "meminfo", "loadavg", "diskstats")
        return Launch(
            [
                self.binary,
                f"--web.listen-address=127.0.0.1:{self.port}",
                # Only what the dashboards and alerts use: the default set is ~40 collectors.
                "--collector.disable-defaults",
                *(f"--collector.{c}" for c in collectors),
            ]
        )
