"""The ceiling for ingest: Kafka's own producer tool on the same machine, same message size, acks=all."""

from __future__ import annotations

import re
import subprocess

from confluent_kafka.admin import AdminClient, NewTopic

from tally.settings import Settings
from tally.stack.install import java_bin, maven_libs

TOPIC = "bench.ceiling"


def run(settings: Settings, records: int, record_size: int = 240) -> dict:
    admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap})
    if TOPIC not in admin.list_topics(timeout=10).topics:
        admin.create_topics([NewTopic(TOPIC, settings.kafka_partitions, 1)])[TOPIC].result(30)
    lib = maven_libs(settings, "kafka")
    cmd = [
        java_bin(settings, "kafka"),
        "-Xmx512m",
        "-cp",
        f"{lib}/*",
        f"-Dlog4j2.configurationFile={settings.deploy_dir / 'kafka' / 'log4j2.properties'}",
        "org.apache.kafka.tools.ProducerPerformance",
        "--topic",
        TOPIC,
        "--num-records",
        str(records),
        "--record-size",
        str(record_size),
        "--throughput",
        "-1",
        "--producer-props",
        f"bootstrap.servers={settings.kafka_bootstrap}",
        "acks=all",
        "enable.idempotence=true",
        "linger.ms=5",
        "batch.size=1000000",
        "compression.type=lz4",
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    m = re.findall(r"(\d+) records sent, ([\d.]+) records/sec", out.stdout)
    if out.returncode != 0 or not m:
        raise RuntimeError("ProducerPerformance failed:\n" + out.stdout[-1000:] + out.stderr[-1000:])
    admin.delete_topics([TOPIC])
    return {"kafka_tool_records": int(m[-1][0]), "kafka_tool_records_per_s": round(float(m[-1][1]))}
