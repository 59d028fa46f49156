"""What operators look at, defined once: the Grafana dashboards (deploy/grafana/, built by
tally.ops.grafana), the /ops page of Tally's UI and the figures of `tally status` all read these
panels and their PromQL. Metric names are those of tally/api/metrics.py, dataflows/metrics.py, the
exporters (deploy/prometheus/) and the recording rules at the top of deploy/prometheus/rules/pipeline.yml.

Every query returns data on a running stack under load (tests/e2e/test_operations.py runs them all).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Query:
    expr: str
    legend: str = ""  # Grafana's legendFormat, e.g. "partition {{partition}}"


@dataclass(frozen=True)
class Panel:
    id: str  # stable: the /ops page asks for a panel by it, never with PromQL of its own
    title: str
    description: str
    unit: str  # Grafana's unit ids: ops (per second), s, bytes, short, percentunit
    queries: tuple[Query, ...]
    kind: str = "timeseries"  # or "stat": one current value
    ops_page: bool = False  # also drawn on Tally's /ops page


@dataclass(frozen=True)
class Dashboard:
    uid: str
    title: str
    description: str
    panels: tuple[Panel, ...]


def _q(expr: str, legend: str = "") -> tuple[Query, ...]:
    return (Query(expr, legend),)


EVENTS_IN_OUT = Panel(
    "events",
    "Events in and counted",
    "Accepted by the API (202) and counted by the dataflow, per second.",
    "ops",
    (Query("tally:events_in:rate1m", "accepted"), Query("tally:events_out:rate1m", "counted")),
    ops_page=True,
)
FRESHNESS = Panel(
    "freshness",
    "Freshness",
    "How long events may have waited to be counted, per partition: the age of its"
    " last commit while messages wait (target: 2 s p99; alert beyond 60 s).",
    "s",
    _q("tally:freshness_seconds", "{{topic}} p{{partition}}"),
    ops_page=True,
)
WATERMARK_LAG = Panel(
    "watermark_lag",
    "Watermark lag",
    "Wall clock minus each partition's committed watermark (its newest event"
    " time). Flat and small while healthy; climbing steadily means the partition stopped committing.",
    "s",
    _q("tally:watermark_lag_seconds", "{{topic}} p{{partition}}"),
    ops_page=True,
)
CONSUMER_LAG = Panel(
    "consumer_lag",
    "Consumer lag",
    "Messages in Kafka after the offset stored with each partition's rollups"
    " (up to 1,000 events a message). Grows while the dataflow is down or slower than ingest.",
    "short",
    _q("tally:consumer_lag_messages", "{{topic}} p{{partition}}"),
    ops_page=True,
)
FIRING = Panel(
    "alerts_firing",
    "Alerts firing",
    "Alert rules firing now (deploy/prometheus/rules/).",
    "short",
    _q('count(ALERTS{alertstate="firing"}) or vector(0)', "firing"),
    kind="stat",
    ops_page=True,
)
SIDE_STREAMS = Panel(
    "side_streams",
    "Dead letters, late events, duplicates",
    "Events per second the dataflow dead-letters"
    " (events.dlq, by kind), ledgers as late (folded in by the hourly correction) or drops as copies.",
    "ops",
    (
        Query("sum by (kind) (rate(tally_dataflow_dead_letters_total[1m]))", "dead letters: {{kind}}"),
        Query("sum(rate(tally_dataflow_late_events_total[1m]))", "late"),
        Query("sum(rate(tally_dataflow_duplicates_total[1m]))", "duplicates"),
    ),
    ops_page=True,
)
FLUSH = Panel(
    "flush_seconds",
    "Flush time by stage (p99)",
    "Time each stage of a flush takes, retries included: which store slows the stream down.",
    "s",
    _q(
        "histogram_quantile(0.99, sum by (le, stage) (rate(tally_dataflow_flush_stage_seconds_bucket[1m])))",
        "{{stage}}",
    ),
    ops_page=True,
)
QUERY_LATENCY = Panel(
    "query_seconds",
    "API latency by route (p99)",
    "99th percentile of request time per route.",
    "s",
    _q("histogram_quantile(0.99, sum by (le, route) (rate(tally_api_request_seconds_bucket[1m])))", "{{route}}"),
    ops_page=True,
)
REQUESTS = Panel(
    "requests",
    "API requests by status",
    "Requests per second by HTTP status.",
    "ops",
    _q("sum by (status) (rate(tally_api_request_seconds_count[1m]))", "{{status}}"),
)
REJECTED = Panel(
    "rejected",
    "Events rejected and refused",
    "Events refused by validation (by the field at fault) and valid"
    " events answered 503 because Kafka did not acknowledge (by cause), per second.",
    "ops",
    (
        Query("sum by (field) (rate(tally_api_events_rejected_total[1m]))", "rejected: {{field}}"),
        Query("sum by (cause) (rate(tally_api_events_unavailable_total[1m]))", "503: {{cause}}"),
    ),
)
PRODUCE = Panel(
    "produce_seconds",
    "Kafka acknowledgement time (p50, p99)",
    "From handing a request's events to the producer to Kafka's ack of all of them.",
    "s",
    (
        Query("histogram_quantile(0.5, sum by (le) (rate(tally_api_produce_seconds_bucket[1m])))", "p50"),
        Query("histogram_quantile(0.99, sum by (le) (rate(tally_api_produce_seconds_bucket[1m])))", "p99"),
    ),
)
BODY = Panel(
    "body_bytes",
    "Ingest body size (p50, p99)",
    "Size of ingest bodies after gzip.",
    "bytes",
    (
        Query("histogram_quantile(0.5, sum by (le) (rate(tally_api_body_bytes_bucket[5m])))", "p50"),
        Query("histogram_quantile(0.99, sum by (le) (rate(tally_api_body_bytes_bucket[5m])))", "p99"),
    ),
)
READ = Panel(
    "read",
    "Messages read per partition",
    "Kafka messages the dataflow reads, per second.",
    "ops",
    _q("sum by (partition) (rate(tally_dataflow_messages_read_total[1m]))", "partition {{partition}}"),
)
STORE_FAILURES = Panel(
    "store_failures",
    "Store write failures",
    "Failed writes of flushes per second, by store and kind: transient"
    " (retried with back-off) or refused (the events are dead-lettered).",
    "ops",
    _q("sum by (store, kind) (rate(tally_dataflow_store_failures_total[1m]))", "{{store}} {{kind}}"),
)
OPEN_CELLS = Panel(
    "open_cells",
    "Open cells",
    "Minute and hour cells each partition holds in memory.",
    "short",
    _q("sum by (partition) (tally_dataflow_open_cells)", "partition {{partition}}"),
)
LATE_PENDING = Panel(
    "late_pending",
    "Late events waiting for the correction",
    "Late events not folded into the rollups yet (what answers show as late_count); the hourly correction drains them.",
    "short",
    _q("max(tally_late_events_pending)", "pending"),
    kind="stat",
)
CORRECTIONS = Panel(
    "corrections",
    "Last correction and reconciliation",
    "Minutes since the hourly late-event correction last"
    " finished, and cells its reconciliation found disagreeing (0 when every event is counted once).",
    "short",
    (
        Query(
            '(time() - max(tally_operation_finished_at_seconds{operation="late_event_corrections"})) / 60',
            "minutes since",
        ),
        Query('max(tally_operation_mismatches{operation="late_event_corrections"})', "mismatched cells"),
    ),
    kind="stat",
)
CASSANDRA = Panel(
    "cassandra_latency",
    "Cassandra request latency (p99)",
    "Coordinator latency of writes and reads.",
    "s",
    _q('max by (operation) (cassandra_client_request_seconds{quantile="0.99"})', "{{operation}}"),
)
CASSANDRA_WORK = Panel(
    "cassandra_work",
    "Cassandra writes and compactions",
    "Write requests per second and compactions waiting.",
    "short",
    (
        Query('sum(rate(cassandra_client_requests_total{operation="Write"}[1m]))', "writes/s"),
        Query("max(cassandra_compaction_pending_tasks)", "pending compactions"),
    ),
)
STORE_SIZE = Panel(
    "store_size",
    "Data on disk",
    "Cassandra's live data, PostgreSQL's database and Kafka's events topic.",
    "bytes",
    (
        Query("max(cassandra_storage_load_bytes)", "Cassandra"),
        Query("max(pg_database_size_bytes)", "PostgreSQL (all databases)"),
        Query('sum(kafka_log_size_bytes{topic="events"})', "Kafka events topic"),
    ),
)
POSTGRES = Panel(
    "postgres",
    "PostgreSQL transactions and connections",
    "Commits per second and open connections.",
    "short",
    (
        Query("sum(rate(pg_stat_database_xact_commit[1m]))", "commits/s"),
        Query("sum(pg_stat_activity_count)", "connections"),
    ),
)
KAFKA = Panel(
    "kafka",
    "Kafka throughput",
    "Bytes in and out of the broker per second.",
    "bytes",
    (
        Query("sum(rate(kafka_server_bytes_in_total[1m]))", "in"),
        Query("sum(rate(kafka_server_bytes_out_total[1m]))", "out"),
    ),
)
CPU = Panel(
    "cpu",
    "CPU by component",
    "Cores used by each process that reports its CPU (JVMs, the dataflow, the exporters) and by the whole machine.",
    "short",
    (
        Query("sum by (job) (rate(process_cpu_seconds_total[1m]))", "{{job}}"),
        Query('sum(rate(node_cpu_seconds_total{mode!="idle"}[1m]))', "machine"),
    ),
)
MEMORY = Panel(
    "memory",
    "Resident memory by component",
    "RSS of each process that reports it.",
    "bytes",
    _q("sum by (job) (process_resident_memory_bytes)", "{{job}}"),
)
DISK = Panel(
    "disk_free",
    "Disk free",
    "Share of each filesystem still free (alert below 10 %).",
    "percentunit",
    _q('node_filesystem_avail_bytes{fstype!~"tmpfs|ramfs|overlay"} / node_filesystem_size_bytes', "{{mountpoint}}"),
    kind="stat",
)
TARGETS = Panel(
    "targets_up",
    "Targets up",
    "Scrape targets answering, per job.",
    "short",
    _q("sum by (job) (up)", "{{job}}"),
    kind="stat",
)

DASHBOARDS: tuple[Dashboard, ...] = (
    Dashboard(
        "tally-overview",
        "Tally: overview",
        "Is Tally healthy? Throughput, freshness, lag and alerts at a glance.",
        (EVENTS_IN_OUT, FRESHNESS, CONSUMER_LAG, FIRING, REQUESTS, QUERY_LATENCY),
    ),
    Dashboard(
        "tally-pipeline",
        "Tally: pipeline",
        "From the API through Kafka to the dataflow's flushes.",
        (
            EVENTS_IN_OUT,
            REJECTED,
            PRODUCE,
            BODY,
            READ,
            WATERMARK_LAG,
            CONSUMER_LAG,
            SIDE_STREAMS,
            FLUSH,
            STORE_FAILURES,
            OPEN_CELLS,
            LATE_PENDING,
            CORRECTIONS,
        ),
    ),
    Dashboard(
        "tally-storage",
        "Tally: storage",
        "Cassandra, PostgreSQL and Kafka as Tally uses them.",
        (CASSANDRA, CASSANDRA_WORK, POSTGRES, KAFKA, STORE_SIZE),
    ),
    Dashboard(
        "tally-services",
        "Tally: services",
        "The processes and the machine under them.",
        (CPU, MEMORY, DISK, TARGETS),
    ),
)


def panels() -> dict[str, Panel]:
    """Every panel once, by id."""
    return {p.id: p for d in DASHBOARDS for p in d.panels}


def ops_panels() -> list[Panel]:
    return [p for p in panels().values() if p.ops_page]
