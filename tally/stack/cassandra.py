"""Apache Cassandra 5.0, one node, from the cassandra-all jar and its dependencies."""

from __future__ import annotations

import logging
from string import Template

from tally.settings import REPO_ROOT
from tally.stack.exporters import jmx_agent
from tally.stack.install import java_bin, maven_libs
from tally.stack.service import Launch, Service, StackError, port_in_use


class Cassandra(Service):
    name = "cassandra"
    stop_grace_s = 45.0

    @property
    def port(self) -> int:
        return self.settings.cassandra_port

    def install(self) -> None:
        self.lib = maven_libs(self.settings, "cassandra")
        self.java = java_bin(self.settings, self.name)

    def prepare(self) -> None:
        s = self.settings
        if port_in_use(s.cassandra_storage_port):
            raise StackError(
                self.name,
                f"storage port {s.cassandra_storage_port} is already in use; set TALLY_CASSANDRA_STORAGE_PORT",
            )
        for sub in ("data", "commitlog", "saved_caches", "hints", "cdc_raw"):
            (self.data_dir / sub).mkdir(parents=True, exist_ok=True)
        self.conf_dir.mkdir(parents=True, exist_ok=True)
        template = Template((s.deploy_dir / "cassandra" / "cassandra.yaml").read_text())
        (self.conf_dir / "cassandra.yaml").write_text(
            template.substitute(port=s.cassandra_port, storage_port=s.cassandra_storage_port, data_dir=self.data_dir)
        )

    @property
    def metrics_port(self) -> int:
        return self.settings.cassandra_metrics_port

    def launch(self) -> Launch:
        if port_in_use(self.metrics_port):
            raise StackError(self.name, f"metrics port {self.metrics_port} is in use; set TALLY_CASSANDRA_METRICS_PORT")
        deploy = self.settings.deploy_dir / "cassandra"
        options = [
            line.strip()
            for line in (deploy / "jvm17.options").read_text().splitlines()
            if line.strip() and not line.startswith("#")
        ]
        jamm = next(self.lib.glob("jamm-*.jar"), None)
        if jamm is None:
            raise StackError(self.name, f"jamm jar missing from {self.lib}; delete that folder to re-resolve")
        heap = self.settings.cassandra_heap
        argv = [
            self.java,
            f"-Xms{heap}",
            f"-Xmx{heap}",
            *options,
            f"-javaagent:{jamm}",
            jmx_agent(self.settings, self.name, self.metrics_port),
            f"-Dcassandra.config=file://{self.conf_dir / 'cassandra.yaml'}",
            f"-Dcassandra.storagedir={self.data_dir}",
            f"-Dcassandra.logdir={self.home / 'logs'}",
            f"-Dlogback.configurationFile={deploy / 'logback.xml'}",
            "-Dcassandra-foreground=yes",
            # A node that is its own seed has nobody to gossip with; do not wait for it.
            "-Dcassandra.skip_wait_for_gossip_to_settle=0",
            "-cp",
            f"{self.conf_dir}:{self.lib}/*",
            "org.apache.cassandra.service.CassandraDaemon",
        ]
        # glibc's per-thread arenas bloat RSS of a JVM with many threads.
        return Launch(argv, env={"MALLOC_ARENA_MAX": "4"})

    def _session(self, keyspace: str | None = None):
        from cassandra.cluster import Cluster
        from cassandra.policies import DCAwareRoundRobinPolicy

        logging.getLogger("cassandra").setLevel(logging.CRITICAL)
        cluster = Cluster(
            ["127.0.0.1"],
            port=self.port,
            protocol_version=5,
            load_balancing_policy=DCAwareRoundRobinPolicy(local_dc="datacenter1"),
            connect_timeout=3,
        )
        return cluster, cluster.connect(keyspace)

    def probe(self) -> bool:
        if not port_in_use(self.port):
            return False
        try:
            cluster, session = self._session()
        except Exception:
            return False
        try:
            return session.execute("select release_version from system.local").one() is not None
        except Exception:
            return False
        finally:
            cluster.shutdown()

    def after_ready(self) -> None:
        cql = Template((REPO_ROOT / "tally" / "schema" / "cassandra.cql").read_text())
        text = cql.substitute(keyspace=self.settings.cassandra_keyspace)
        statements = [s.strip() for s in _strip_comments(text).split(";") if s.strip()]
        cluster, session = self._session()
        try:
            for stmt in statements:
                session.execute(stmt, timeout=60)
        finally:
            cluster.shutdown()


def _strip_comments(cql: str) -> str:
    return "\n".join(line for line in cql.splitlines() if not line.lstrip().startswith("--"))
