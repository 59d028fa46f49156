"""Apache Kafka 4.x in KRaft mode: one node that is both broker and controller."""

from __future__ import annotations

import base64
import os
import subprocess
from string import Template

from tally.stack.exporters import jmx_agent
from tally.stack.install import java_bin, maven_libs, say
from tally.stack.service import Launch, Service, StackError, port_in_use


def _cluster_id() -> str:
    """A random cluster id as Kafka writes them (URL-safe base64 of 16 bytes). One in 64 starts
    with '-', which the storage tool's argument parser takes for an option; Kafka's own
    Uuid.randomUuid draws again in that case, and so does this."""
    while True:
        cluster_id = base64.urlsafe_b64encode(os.urandom(16)).rstrip(b"=").decode()
        if not cluster_id.startswith("-"):
            return cluster_id


class Kafka(Service):
    name = "kafka"

    @property
    def port(self) -> int:
        return self.settings.kafka_port

    @property
    def properties(self):
        return self.conf_dir / "server.properties"

    def install(self) -> None:
        self.lib = maven_libs(self.settings, "kafka")
        self.java = java_bin(self.settings, self.name)

    def prepare(self) -> None:
        s = self.settings
        if port_in_use(s.kafka_controller_port):
            raise StackError(
                self.name,
                f"controller port {s.kafka_controller_port} is already in use; set TALLY_KAFKA_CONTROLLER_PORT",
            )
        self.conf_dir.mkdir(parents=True, exist_ok=True)
        template = Template((s.deploy_dir / "kafka" / "server.properties").read_text())
        self.properties.write_text(
            template.substitute(
                port=s.kafka_port,
                controller_port=s.kafka_controller_port,
                data_dir=self.data_dir,
                partitions=s.kafka_partitions,
            )
        )
        if (self.data_dir / "meta.properties").exists():
            return
        say(self.name, "formatting storage (first start)")
        cluster_id = _cluster_id()
        r = subprocess.run(
            [
                *self._java_cmd("256m"),
                "kafka.tools.StorageTool",
                "format",
                "--standalone",
                "-t",
                cluster_id,
                "-c",
                str(self.properties),
            ],
            capture_output=True,
            text=True,
        )
        if r.returncode != 0:
            raise StackError(self.name, "formatting the storage failed:\n" + (r.stderr or r.stdout)[-2000:])

    def _java_cmd(self, heap: str) -> list[str]:
        log4j = self.settings.deploy_dir / "kafka" / "log4j2.properties"
        return [
            self.java,
            f"-Xms{heap}",
            f"-Xmx{heap}",
            "-XX:+UseG1GC",
            "-XX:MaxGCPauseMillis=20",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={log4j}",
            f"-Dkafka.logs.dir={self.home / 'logs'}",
            "-cp",
            f"{self.lib}/*",
        ]

    @property
    def metrics_port(self) -> int:
        return self.settings.kafka_metrics_port

    def launch(self) -> Launch:
        if port_in_use(self.metrics_port):
            raise StackError(self.name, f"metrics port {self.metrics_port} is in use; set TALLY_KAFKA_METRICS_PORT")
        java, *rest = self._java_cmd(self.settings.kafka_heap)
        agent = jmx_agent(self.settings, self.name, self.metrics_port)
        return Launch([java, agent, *rest, "kafka.Kafka", str(self.properties)])

    def probe(self) -> bool:
        # librdkafka logs an error every ~50 ms while nothing listens, so check the port first.
        if not port_in_use(self.port):
            return False
        try:
            return len(self._admin().list_topics(timeout=2).brokers) > 0
        except Exception:
            return False

    def _admin(self):
        from confluent_kafka.admin import AdminClient

        return AdminClient({"bootstrap.servers": self.settings.kafka_bootstrap, "log_level": 3})

    def after_ready(self) -> None:
        from confluent_kafka.admin import NewTopic

        admin = self._admin()
        existing = admin.list_topics(timeout=10).topics
        missing = [t for t in self.settings.kafka_topics if t not in existing]
        if missing:
            futures = admin.create_topics(
                [
                    NewTopic(
                        t,
                        num_partitions=self.settings.kafka_partitions,
                        replication_factor=1,
                        config=topic_config(t, self.settings),
                    )
                    for t in missing
                ]
            )
            for topic, fut in futures.items():
                try:
                    fut.result(timeout=30)
                except Exception as e:  # a concurrent `up` may have created it first
                    if "TOPIC_ALREADY_EXISTS" not in str(e):
                        raise StackError(self.name, f"could not create topic {topic}: {e}") from e
            say(self.name, f"created topics {', '.join(missing)} ({self.settings.kafka_partitions} partitions)")
        if self.settings.events_topic in existing:
            self._broker_time(admin)

    def _broker_time(self, admin) -> None:
        """Topics made before the events topic took the broker's time: set it (idempotent)."""
        from confluent_kafka.admin import AlterConfigOpType, ConfigEntry, ConfigResource, ResourceType

        entry = ConfigEntry("message.timestamp.type", "LogAppendTime", incremental_operation=AlterConfigOpType.SET)
        resource = ConfigResource(ResourceType.TOPIC, self.settings.events_topic, incremental_configs=[entry])
        for fut in admin.incremental_alter_configs([resource]).values():
            fut.result(timeout=30)


def topic_config(topic: str, settings) -> dict[str, str]:
    """The events topic stamps each message with the broker's time (LogAppendTime), not the
    producer's: the dataflow judges how far ahead an event is stamped against it, and a producer
    with a clock gone wrong would otherwise vouch for its own events."""
    return {"message.timestamp.type": "LogAppendTime"} if topic == settings.events_topic else {}
