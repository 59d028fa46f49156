"""PostgreSQL 15 from Debian's packages, as a cluster of the stack's own (own data dir and port).

TimescaleDB is used when its extension is installed; no reachable registry packages it, so the
stack also works on plain PostgreSQL and `CREATE EXTENSION IF NOT EXISTS timescaledb` is skipped.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
from pathlib import Path

from tally.stack.install import apt_install, say
from tally.stack.service import Launch, Service, StackError
from tally.storage import rollup_store

DEBIAN_PACKAGES = ["postgresql-15", "postgresql-15-hll"]
# Optional extensions the rollups can use when installed (hll: mergeable unique-user sketches).
EXTENSIONS = ["timescaledb", "hll"]


class Postgres(Service):
    name = "postgres"
    stop_grace_s = 60.0

    @property
    def port(self) -> int:
        return self.settings.pg_port

    @property
    def port_setting(self) -> str:
        return "TALLY_PG_PORT"

    def _bin_dir(self) -> Path | None:
        if self.settings.pg_bin_dir:
            return self.settings.pg_bin_dir
        debian = Path("/usr/lib/postgresql/15/bin")
        if (debian / "postgres").exists():
            return debian
        pg_config = shutil.which("pg_config")
        if pg_config:
            return Path(subprocess.run([pg_config, "--bindir"], capture_output=True, text=True).stdout.strip())
        return None

    def install(self) -> None:
        bindir = self._bin_dir()
        hll = Path("/usr/share/postgresql/15/extension/hll.control")
        if bindir is None or not (bindir / "postgres").exists() or (os.geteuid() == 0 and not hll.exists()):
            apt_install(self.name, DEBIAN_PACKAGES)
            bindir = self._bin_dir()
        if bindir is None or not (bindir / "postgres").exists():
            raise StackError(self.name, "PostgreSQL 15 binaries not found; set TALLY_PG_BIN_DIR")
        self.bindir = bindir
        # PostgreSQL refuses to run as root; as root we run it as Debian's `postgres` user.
        self.user = None
        if os.geteuid() == 0:
            try:
                pwd.getpwnam("postgres")
            except KeyError as e:
                raise StackError(
                    self.name, "running as root needs the `postgres` OS user (Debian's package adds it)"
                ) from e
            self.user = "postgres"

    def _as_user(self, argv: list[str]) -> subprocess.CompletedProcess:
        return subprocess.run(argv, capture_output=True, text=True, user=self.user, cwd="/")

    def _chown(self, path: Path) -> None:
        if self.user:
            shutil.chown(path, self.user, self.user)

    def prepare(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        self.conf_dir.mkdir(parents=True, exist_ok=True)
        (self.home / "run").mkdir(exist_ok=True)
        for p in (self.home, self.conf_dir, self.home / "run"):
            self._chown(p)
        if not (self.data_dir / "PG_VERSION").exists():
            say(self.name, "initialising the cluster (first start)")
            if self.data_dir.exists():
                shutil.rmtree(self.data_dir)
            self.data_dir.mkdir()
            self._chown(self.data_dir)
            pwfile = self.conf_dir / "pwfile"
            pwfile.write_text(self.settings.pg_password + "\n")
            self._chown(pwfile)
            r = self._as_user(
                [
                    str(self.bindir / "initdb"),
                    "-D",
                    str(self.data_dir),
                    "-U",
                    self.settings.pg_user,
                    f"--pwfile={pwfile}",
                    "--auth-local=trust",
                    "--auth-host=scram-sha-256",
                    "--encoding=UTF8",
                    "--no-locale",
                ]
            )
            pwfile.unlink()
            if r.returncode != 0:
                raise StackError(self.name, "initdb failed:\n" + (r.stderr or r.stdout)[-2000:])
        # Our settings are copied in on every start, so editing deploy/postgres/tally.conf takes effect.
        conf = self.data_dir / "tally.conf"
        shutil.copyfile(self.settings.deploy_dir / "postgres" / "tally.conf", conf)
        self._chown(conf)
        main_conf = self.data_dir / "postgresql.conf"
        if "include 'tally.conf'" not in main_conf.read_text():
            with main_conf.open("a") as f:
                f.write("\ninclude 'tally.conf'\n")

    def launch(self) -> Launch:
        argv = [
            str(self.bindir / "postgres"),
            "-D",
            str(self.data_dir),
            "-p",
            str(self.port),
            "-k",
            str(self.home / "run"),
        ]
        pkglib = self._pkglibdir()
        if pkglib and (pkglib / "timescaledb.so").exists():
            argv += ["-c", "shared_preload_libraries=timescaledb", "-c", "timescaledb.telemetry_level=off"]
        return Launch(argv, user=self.user, cwd=Path("/"))

    def _pkglibdir(self) -> Path | None:
        pg_config = self.bindir / "pg_config"
        if not pg_config.exists():
            pg_config = Path(shutil.which("pg_config") or "")
        if not pg_config.is_file():
            return None
        return Path(subprocess.run([str(pg_config), "--pkglibdir"], capture_output=True, text=True).stdout.strip())

    def _connect(self, dbname: str):
        import psycopg

        s = self.settings
        return psycopg.connect(
            host="127.0.0.1",
            port=self.port,
            user=s.pg_user,
            password=s.pg_password,
            dbname=dbname,
            connect_timeout=3,
            autocommit=True,
        )

    def probe(self) -> bool:
        try:
            with self._connect("postgres") as conn:
                return conn.execute("select 1").fetchone() == (1,)
        except Exception:
            return False

    def after_ready(self) -> None:
        db = self.settings.pg_database
        with self._connect("postgres") as conn:
            if conn.execute("select 1 from pg_database where datname = %s", (db,)).fetchone() is None:
                conn.execute(f'create database "{db}"')
        with self._connect(db) as conn:
            available = {r[0] for r in conn.execute("select name from pg_available_extensions")}
            for ext in EXTENSIONS:
                if ext in available:
                    conn.execute(f"create extension if not exists {ext}")
            # The API may answer queries before the dataflow's first start creates the tables.
            rollup_store.apply_schema(conn)

    def extensions(self) -> list[str]:
        with self._connect(self.settings.pg_database) as conn:
            return [r[0] for r in conn.execute("select extname from pg_extension order by 1")]
