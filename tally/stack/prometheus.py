"""Prometheus from Debian's package, scraping Tally's processes (config in deploy/prometheus/)."""

from __future__ import annotations

import json
import shutil
import urllib.request
from pathlib import Path
from string import Template

from tally.stack.install import apt_install
from tally.stack.service import Launch, Service, StackError


class Prometheus(Service):
    name = "prometheus"

    @property
    def port(self) -> int:
        return self.settings.prometheus_port

    def install(self) -> None:
        if not shutil.which("prometheus"):
            apt_install(self.name, ["prometheus"])
        binary = shutil.which("prometheus")
        if not binary:
            raise StackError(self.name, "the prometheus binary is not on PATH after installing it")
        self.binary = binary

    @property
    def config(self) -> Path:
        return self.conf_dir / "prometheus.yml"

    def prepare(self) -> None:
        s = self.settings
        self.conf_dir.mkdir(parents=True, exist_ok=True)
        template = Template((s.deploy_dir / "prometheus" / "prometheus.yml").read_text())
        self.config.write_text(
            template.safe_substitute(
                prometheus_port=s.prometheus_port,
                api_port=s.api_port,
                kafka_metrics_port=s.kafka_metrics_port,
                cassandra_metrics_port=s.cassandra_metrics_port,
                postgres_exporter_port=s.postgres_exporter_port,
                node_exporter_port=s.node_exporter_port,
                dataflow_targets=json.dumps(
                    [f"127.0.0.1:{s.dataflow_metrics_port + i}" for i in range(s.dataflow_processes)]
                ),
                rules_dir=s.deploy_dir / "prometheus" / "rules",
            )
        )

    def launch(self) -> Launch:
        return Launch(
            [
                self.binary,
                f"--config.file={self.config}",
                f"--storage.tsdb.path={self.data_dir}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--storage.tsdb.retention.time=15d",
                # Lets `tally` reload the config (POST /-/reload) without a restart.
                "--web.enable-lifecycle",
            ]
        )

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def probe(self) -> bool:
        try:
            with urllib.request.urlopen(self.url("/-/ready"), timeout=2) as r:
                return r.status == 200
        except Exception:
            return False
