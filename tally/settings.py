"""Every setting of Tally, read once from the environment (prefix ``TALLY_``) or a ``.env`` file.

This is the single source of truth for ports, heap sizes and paths; the README lists the defaults.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

# The repository root: the stack's configs live in deploy/ beside the packages.
REPO_ROOT = Path(__file__).resolve().parent.parent


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TALLY_", env_file=".env", extra="ignore")

    # Everything the local stack writes (data, logs, pid files, downloaded jars) lives under here.
    state_dir: Path = Field(default=REPO_ROOT / ".tally")
    deploy_dir: Path = Field(default=REPO_ROOT / "deploy")

    # Kafka and Cassandra need Java 17 (Cassandra 5.0 cannot start on 24+); unset: JAVA_HOME, then PATH.
    java_home: Path | None = None

    # Where the stores are. The local stack runs them all on loopback; on Kubernetes (deploy/k8s/)
    # they are Services elsewhere, so every client reads its host from here, never a literal.
    kafka_host: str = "127.0.0.1"
    pg_host: str = "127.0.0.1"
    # Cassandra's contact points: any one that answers tells the driver about the rest of the ring.
    # NoDecode: the variable is "a,b" (as a ConfigMap writes it), not the JSON list pydantic expects.
    cassandra_hosts: Annotated[list[str], NoDecode, Field(min_length=1)] = ["127.0.0.1"]
    # The driver sends queries only to this data centre's nodes; "datacenter1" is the name Cassandra
    # gives a node whose snitch is not told otherwise, as the local stack's is.
    cassandra_local_dc: str = "datacenter1"
    # Where the dataflow serves /metrics: loopback locally; 0.0.0.0 in a pod, or Prometheus (and the
    # kubelet's probe) cannot reach it.
    metrics_host: str = "127.0.0.1"

    # Kafka (KRaft, one combined broker/controller node).
    kafka_port: int = 9092
    kafka_controller_port: int = 9093
    # 1 GiB is ample for one broker at 115 K events/s: Kafka serves from the page cache, not the heap.
    kafka_heap: str = "1g"
    kafka_partitions: int = 4
    events_topic: str = "events"
    dlq_topic: str = "events.dlq"
    late_topic: str = "events.late"

    # Cassandra 5.0, one node.
    cassandra_port: int = 9042
    cassandra_storage_port: int = 7000
    # 2 GiB of a 24 GiB, 2-core box: the rest is page cache and the other services.
    cassandra_heap: str = "2g"
    cassandra_keyspace: str = "tally"
    # Raw events expire after this long; /api/filtered_events looks back at most 31 days.
    raw_ttl_s: int = 35 * 24 * 3600

    # PostgreSQL 15 (+ TimescaleDB when installed), its own cluster, not the system one.
    pg_port: int = 5433
    pg_user: str = "tally"
    pg_password: str = "tally"
    pg_database: str = "tally"
    pg_bin_dir: Path | None = None  # found from pg_config / Debian's layout when unset

    # The API: worker processes (uvicorn), request limits, how long to wait for Kafka's ack.
    api_workers: int = 2
    max_body_bytes: int = 10 * 1024 * 1024
    produce_timeout_s: float = 5.0
    retry_after_s: int = 5
    # Query cost limits. An aggregate answer holds at most this many points (buckets x groups; the
    # 30-day, 100-series dashboard is 72,000), and its SQL may run this long; beyond either it is
    # refused with a hint instead of holding a worker's memory or a database backend.
    max_points: int = 200_000
    query_timeout_s: float = 5.0
    # /api/filtered_events stops scanning after this long and returns the page found so far with a
    # cursor to go on from, so a filter that matches nothing cannot scan 31 days on one request.
    scan_budget_s: float = 2.0

    # The dataflow: one Bytewax process per core, each owning the Kafka partitions p % processes.
    dataflow_processes: int = 2
    # Open buckets' partial values are written at least this often (the freshness promise is 2 s).
    flush_interval_s: float = 1.0
    # While a partition has more than backlog_messages unread (a restart, an outage, a burst), its
    # flushes are this far apart instead: nobody is looking at the head yet, and a flush costs in
    # proportion to the cells it touches, not the events, so fewer of them drain a backlog faster.
    # Back at the head, flush_interval_s again. A flush also happens once a partition holds
    # flush_max_events events, which bounds the dataflow's memory (~300 bytes an event held).
    backlog_flush_interval_s: float = 5.0
    backlog_messages: int = 200
    # ... and only every this many seconds does such a flush commit rollups and the offset: the
    # flushes between write raw events and dead letters and remember their ends (tally.dedup), and
    # a restart re-aggregates from the last commit. A cell is then written once per commit instead
    # of once per flush. Back at the head every flush commits. 0: every flush commits.
    backlog_commit_interval_s: float = 30.0
    flush_max_events: int = 200_000
    # An event up to this far behind the watermark still updates its bucket; later ones are late.
    allowed_lateness_s: int = 300
    # An event stamped further ahead of the clock than this (a client's clock gone wrong) is refused
    # at ingest, and dead-lettered by the dataflow if it comes another way (judged by its Kafka
    # timestamp): it would hold its bucket open without bound, outlive dedup and move the watermark
    # past every on-time event.
    max_ahead_s: int = 300
    # A partition with nothing left to read lets its watermark follow the wall clock this far
    # behind, so its buckets close (and answers become final) without waiting for new events.
    idle_lag_s: int = 60
    # Copies of an event_id are counted once if they arrive within this much event time of each
    # other (the dataflow keeps the ids on disk, tally.dedup). A copy beyond it is late as well, and
    # the correction step finds it in raw storage (tally.storage.late_copies); until then the
    # reconciliation shows it. 0 turns dedup off (~2 us an event of dataflow CPU saved) for
    # streams whose ids never repeat.
    dedup_horizon_s: int = 3600
    # Memory each dedup generation of a partition may take for its in-memory filter of ids
    # (tally.idfilter), which spares most lookups in RocksDB (~2 us an event): 64 MiB holds 33 M
    # ids; past it the generation's ids are asked of RocksDB. 0 turns the filters off.
    dedup_filter_mib: int = Field(default=64, ge=0, le=65536)
    # Kafka messages fetched per poll. The API writes up to 1,000 events per message, so 50
    # messages bound one batch to ~50,000 events: large enough to keep per-event work in C,
    # small enough that a replayed backlog flushes in pieces.
    consume_batch: int = 50
    # ... and this many while draining a backlog (more than backlog_messages unread): each cell is
    # then folded once for more of its events (at 10,000 keys a 50-message batch held ~1 event a
    # cell); measured: a 10,000-key catch-up 58 K -> 64 K events/s.
    backlog_consume_batch: int = 400

    # Backfill (tally.backfill): rows read and validated together, each chunk a ledger row; their
    # rollups and ledger rows commit together once this many rows are read (a cell of a busy
    # minute is then written once a commit, not once a chunk), so a rerun redoes at most those.
    backfill_chunk_rows: int = Field(50_000, ge=1, le=1 << 20)
    backfill_commit_rows: int = Field(500_000, ge=1)
    # At most this many rows a second (0: as fast as it goes): the live stream keeps its share.
    backfill_max_events_per_s: float = Field(0.0, ge=0)
    # Where the orchestrator's daily backfill finds a day of history: files under this directory
    # named by the day (DIR/2026-11-30/*, DIR/*2026-11-30*), or this query over a legacy PostgreSQL
    # database with the day's bounds as %(start)s and %(end)s. Days before backfill_start_date are
    # not offered as partitions.
    backfill_dir: Path | None = None
    backfill_dsn: str | None = None
    backfill_query: str | None = None
    backfill_start_date: str = "2026-01-01"

    # Migration from a legacy system (tally.legacy). Dual write: the API also forwards every accepted
    # event to the legacy side ("http": NDJSON POSTed to legacy_url; "postgres": rows into
    # legacy_table on legacy_dsn), in the background: a slow or absent legacy side never slows or
    # fails ingest. Each API worker holds at most legacy_buffer_events (and legacy_buffer_bytes)
    # waiting; beyond that new events are dropped for the legacy side only, counted in
    # tally_legacy_dropped_events_total.
    legacy_sink: Literal["off", "http", "postgres"] = "off"
    legacy_url: str | None = None
    legacy_dsn: str | None = None
    legacy_table: str = Field("legacy_events", pattern=r"^[a-z_][a-z0-9_]{0,62}$")
    legacy_buffer_events: int = Field(100_000, ge=1)
    legacy_buffer_bytes: int = Field(64 << 20, ge=1 << 20)
    legacy_batch_events: int = Field(5_000, ge=1)
    legacy_timeout_s: float = Field(5.0, gt=0)
    # The comparison (orchestration's migration/legacy_comparison, per hour and event type) fails its
    # check when counts or sums differ by more than this share of the larger side.
    legacy_tolerance: float = Field(0.001, ge=0)
    # Staged rollout: this share of /api/aggregate requests is answered from legacy_table on
    # legacy_dsn (1.0: phase 1, the legacy system answers everything), the rest by Tally; with
    # legacy_shadow the other side is asked too and final points that differ are counted
    # (tally_rollout_*), so both run and are compared before clients move.
    legacy_read_share: float = Field(0.0, ge=0, le=1)
    legacy_shadow: bool = False

    # Who may call the API (tally.auth). On: every route but /healthz, /readyz and (below) /docs and
    # /metrics needs a bearer token (a JWT with scopes events:write, events:read, tally:admin) or an
    # API key (`tally apikey create`). Off is for a closed network only and is logged at every start.
    auth: bool = True
    # The OIDC issuer whose tokens are trusted. Unset: the development issuer the API serves itself
    # at /auth/dev, whose signing key the stack keeps under state_dir/auth (0600) and which signs in
    # browsers on loopback only; `tally token` prints one of its tokens.
    auth_issuer: str | None = None
    # Its key set; unset: the jwks_uri of the issuer's /.well-known/openid-configuration.
    auth_jwks_url: str | None = None
    # The `aud` every token must carry, and the only signing algorithms accepted (never "none" or an
    # HMAC one: a public key must not be usable as a shared secret).
    auth_audience: str = "tally"
    auth_algorithms: Annotated[list[str], NoDecode, Field(min_length=1)] = ["ES256", "RS256", "EdDSA"]
    auth_leeway_s: int = Field(30, ge=0, le=300)
    # A token longer than this is refused unread (headers and claims are small; keys are not inside).
    auth_max_token_bytes: int = Field(8192, ge=512)
    # The browser UI signs in with authorization code + PKCE as this client of auth_issuer, the API
    # keeping the token in an HttpOnly cookie (the backend-for-frontend pattern); a confidential
    # client also sends its secret.
    auth_client_id: str = "tally-ui"
    auth_client_secret: str | None = None
    # Where the browser reaches the API, for the sign-in's redirect; unset: the address it used.
    public_url: str | None = None
    # A revoked API key is refused within this long (lookups are cached per worker).
    auth_key_cache_s: float = Field(5.0, ge=0, le=300)
    # /metrics: "loopback" (Prometheus on the same host or a pod's sidecar), "open", or "token"
    # (scope tally:admin). /docs and /openapi.json: open unless auth_docs_open is false.
    auth_metrics: Literal["loopback", "open", "token"] = "loopback"
    auth_docs_open: bool = True

    # Per-client rate limits (tally.api.ratelimit) in the notation of the `limits` library ("N/second",
    # "N per minute"; empty: none): events ingested, and requests to the query routes. Past either, 429
    # with Retry-After. The windows are per API worker with memory://; redis://host or memcached://host
    # shares them across workers and replicas.
    rate_limit_events: str = "1000000/second"
    rate_limit_queries: str = "500/second"
    rate_limit_storage: str = "memory://"

    prometheus_port: int = 9090
    # Where the API (/ops page) and `tally status` read Prometheus; unset: the local stack's.
    prometheus_url: str | None = None
    # Where Prometheus finds Tally's own processes (they serve /metrics).
    api_port: int = 8000
    dataflow_metrics_port: int = 9101
    # Exporters of the services (deploy/prometheus/): the JMX agents inside Kafka's and Cassandra's
    # JVMs, PostgreSQL's exporter (with Tally's own queries: stored offsets, late events, runs) and
    # the node exporter (disk space of the state directory, CPU, memory).
    kafka_metrics_port: int = 9404
    cassandra_metrics_port: int = 9405
    postgres_exporter_port: int = 9187
    node_exporter_port: int = 9100

    # Dagster (orchestration/): the UI's port, and the database in the stack's PostgreSQL that keeps
    # its runs, checks and sensor cursors.
    dagster_port: int = 3000
    dagster_code_server_port: int = 3001  # Tally's definitions, served to the webserver and daemon
    dagster_database: str = "dagster"
    # The schedules (hourly correction and quality checks, daily rollups and report) start running
    # by themselves. Off, they wait to be turned on in the UI: for a stack whose tables something
    # else owns, like the test suite's, where a correction at ten past would fold a fault run's late
    # events in the middle of its checks.
    dagster_schedules: bool = True
    # The stream's tables are stale (their freshness checks fail) when they have not caught up with
    # the events topic for this long.
    stream_freshness_s: int = 120

    # The dbt project (dbt_project/): `tally up` parses it before starting the API and Dagster, and
    # the API serves the named metrics of its target/semantic_manifest.json (tally.semantic).
    dbt_project_dir: Path = Field(default=REPO_ROOT / "dbt_project")

    # How long `stack up` waits for each service to answer before calling it failed.
    start_timeout_s: float = 180.0

    @field_validator("cassandra_hosts", "auth_algorithms", mode="before")
    @classmethod
    def _split_lists(cls, value: object) -> object:
        if isinstance(value, str):
            return [item.strip() for item in value.split(",") if item.strip()]
        return value

    @field_validator("rate_limit_events", "rate_limit_queries")
    @classmethod
    def _a_limit(cls, value: str) -> str:
        if value:
            from limits import parse

            parse(value)  # a ValueError naming what it could not read
        return value

    @field_validator("auth_algorithms")
    @classmethod
    def _asymmetric_only(cls, value: list[str]) -> list[str]:
        # "none" takes unsigned tokens; an HMAC algorithm would let a published key sign them.
        allowed = {"ES256", "ES384", "ES512", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "EdDSA"}
        if bad := [a for a in value if a not in allowed]:
            raise ValueError(f"only public-key algorithms ({', '.join(sorted(allowed))}); not {', '.join(bad)}")
        return value

    @model_validator(mode="after")
    def _horizon_covers_lateness(self) -> Settings:
        # An id forgotten while its event could still be on time would let a copy into a rollup.
        if self.dedup_horizon_s and self.dedup_horizon_s <= self.allowed_lateness_s + self.max_ahead_s:
            raise ValueError(
                "dedup_horizon_s: must be 0 (off) or more than allowed_lateness_s + max_ahead_s"
                f" ({self.allowed_lateness_s + self.max_ahead_s}), got {self.dedup_horizon_s}"
            )
        return self

    @model_validator(mode="after")
    def _legacy_side_named(self) -> Settings:
        # Said at start-up, not found out at the first event forwarded or query routed.
        needs = []
        if self.legacy_sink == "http" and not self.legacy_url:
            needs.append("legacy_url: required when legacy_sink is http")
        if (self.legacy_sink == "postgres" or self.legacy_read_share or self.legacy_shadow) and not self.legacy_dsn:
            needs.append("legacy_dsn: required when legacy_sink is postgres, legacy_read_share > 0 or legacy_shadow")
        if needs:
            raise ValueError("; ".join(needs))
        return self

    def as_env(self) -> dict[str, str]:
        """Every setting as the TALLY_* variable that sets it: Tally's own processes are started
        with these, so they run with exactly the settings of whoever started them."""
        return {f"TALLY_{k.upper()}": _env_value(v) for k, v in self.model_dump().items() if v is not None}

    @property
    def semantic_manifest_path(self) -> Path:
        """Where `dbt parse` writes the semantic layer: the named metrics the API serves."""
        return self.dbt_project_dir / "target" / "semantic_manifest.json"

    @property
    def kafka_topics(self) -> tuple[str, ...]:
        return (self.events_topic, self.dlq_topic, self.late_topic)

    @property
    def kafka_bootstrap(self) -> str:
        return f"{self.kafka_host}:{self.kafka_port}"

    @property
    def pg_dsn(self) -> str:
        return (
            f"host={self.pg_host} port={self.pg_port} dbname={self.pg_database} "
            f"user={self.pg_user} password={self.pg_password}"
        )

    @property
    def prometheus_base(self) -> str:
        return (self.prometheus_url or f"http://127.0.0.1:{self.prometheus_port}").rstrip("/")

    @property
    def auth_dir(self) -> Path:
        """The development issuer's signing key (tally.auth.devissuer): 0700, its files 0600."""
        return self.state_dir / "auth"

    @property
    def quality_dir(self) -> Path:
        """The latest data-quality report: written by Dagster's quality/quality_report asset, served
        by the API at /quality/."""
        return self.state_dir / "quality"


def _env_value(value: object) -> str:
    # A list goes back as the "a,b" its validator reads, not as Python's repr of it.
    return ",".join(map(str, value)) if isinstance(value, list) else str(value)


@lru_cache
def get_settings() -> Settings:
    return Settings()
