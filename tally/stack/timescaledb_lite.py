"""TimescaleDB inside PGlite (npm), served over the PostgreSQL wire protocol: the conformance target
for TimescaleDB-specific SQL, since no reachable registry packages a TimescaleDB server.

Not part of the default stack: the rollups run on the stack's PostgreSQL; this engine only checks
that Tally's TimescaleDB DDL and queries (hypertables, time_bucket, continuous aggregates) are valid.
It takes one connection at a time, so clients must connect, work, and disconnect.
"""

from __future__ import annotations

import shutil
import subprocess

from tally.stack.install import say
from tally.stack.service import Launch, Service, StackError, port_in_use

FILES = ("package.json", "package-lock.json", "server.mjs")


class TimescaleLite(Service):
    name = "timescaledb-lite"
    stop_grace_s = 10.0

    def __init__(self, settings, port: int = 15499):
        super().__init__(settings)
        self._port = port

    @property
    def port(self) -> int:
        return self._port

    @property
    def port_setting(self) -> str:
        return "the port argument"

    @property
    def app_dir(self):
        return self.home / "app"

    @property
    def dsn(self) -> str:
        # PGlite's socket server speaks no TLS; libpq must not try it.
        return f"host=127.0.0.1 port={self.port} user=postgres password=postgres dbname=postgres sslmode=disable"

    def install(self) -> None:
        src = self.settings.deploy_dir / "timescaledb"
        self.app_dir.mkdir(parents=True, exist_ok=True)
        changed = False
        for f in FILES:
            if not (self.app_dir / f).exists() or (self.app_dir / f).read_bytes() != (src / f).read_bytes():
                shutil.copyfile(src / f, self.app_dir / f)
                changed = True
        if not changed and (self.app_dir / "node_modules").exists():
            return
        npm = shutil.which("npm")
        if not npm:
            raise StackError(self.name, "npm is not installed; apt-get install nodejs npm")
        say(self.name, "installing PGlite + TimescaleDB from npm (~30 MB)...")
        r = subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=self.app_dir, capture_output=True, text=True)
        if r.returncode != 0:
            raise StackError(self.name, "npm ci failed:\n" + (r.stderr or r.stdout)[-2000:])

    def prepare(self) -> None:
        self.node = shutil.which("node")
        if not self.node:
            raise StackError(self.name, "node is not installed")

    def launch(self) -> Launch:
        return Launch([self.node, str(self.app_dir / "server.mjs"), "memory://"], env={"PORT": str(self.port)})

    def probe(self) -> bool:
        if not port_in_use(self.port):
            return False
        import psycopg

        try:
            with psycopg.connect(self.dsn, connect_timeout=3) as conn:
                return conn.execute("select 1 from pg_extension where extname = 'timescaledb'").fetchone() is not None
        except Exception:
            return False

    def up(self) -> None:
        if self.pid() is not None:
            return
        self.install()
        self.prepare()
        self.wait_ready(self.start(), self.settings.start_timeout_s)
