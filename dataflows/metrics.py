"""The dataflow's Prometheus metrics; each dataflow process serves them on its own port."""

import time

from prometheus_client import Counter, Gauge, Histogram, start_http_server

EVENTS = Counter("tally_dataflow_events_total", "Events aggregated into rollups", ["partition"])
MESSAGES_READ = Counter(
    "tally_dataflow_messages_read_total", "Kafka messages read (each holds up to 1,000 events)", ["partition"]
)
BATCHES = Counter("tally_dataflow_batches_total", "Non-empty batches of messages read from Kafka", ["partition"])
READ_LAG = Gauge(
    "tally_dataflow_read_lag_messages",
    "Messages in Kafka after the last one read, per partition (the consumer lag as this process sees it;"
    " Prometheus computes the committed lag from Kafka's and PostgreSQL's exporters, which holds while"
    " the dataflow is down)",
    ["partition"],
)
LATE = Counter(
    "tally_dataflow_late_events_total", "Events too late for their bucket, sent to events.late", ["partition"]
)
DUPLICATES = Counter(
    "tally_dataflow_duplicates_total",
    "Later copies of an event_id seen within the dedup horizon, dropped",
    ["partition"],
)
DEAD_LETTERS = Counter(
    "tally_dataflow_dead_letters_total",
    "Events sent to events.dlq, by kind: schema (the event schema refuses it), ahead (stamped too far"
    " ahead of its arrival), oversized (a message of too many events), tombstone (a message without a"
    " value), refused (a store refused it)",
    ["partition", "kind"],
)
ROWS = Counter("tally_dataflow_rollup_rows_written_total", "Rollup rows upserted", ["partition"])
RAW = Counter("tally_dataflow_raw_events_written_total", "Raw events written to Cassandra", ["partition"])
FLUSH_SECONDS = Histogram(
    "tally_dataflow_flush_seconds",
    "Time to make one flush durable (DLQ/late topics, Cassandra, PostgreSQL)",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
STAGE_SECONDS = Histogram(
    "tally_dataflow_flush_stage_seconds",
    "Time of each stage of a flush, retries included",
    ["stage"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
STORE_FAILURES = Counter(
    "tally_dataflow_store_failures_total",
    "Failed writes of a flush, by store and kind: transient (down, timeout, overload: retried with"
    " back-off) or refused (the store refused some events' content: recorded, then dead-lettered)",
    ["store", "kind"],
)
ROWS_LEFT_OUT = Counter(
    "tally_dataflow_rollup_rows_left_out_total",
    "Rollup rows PostgreSQL refused that hold no event of their flush, so none could be dead-lettered",
    ["partition"],
)
FLUSHES = Counter(
    "tally_dataflow_flushes_total",
    "Flushes written, by kind: commit (rollups and offset) or raw (raw events only, between commits"
    " while a backlog drains)",
    ["partition", "kind"],
)
WATERMARK = Gauge("tally_dataflow_watermark_seconds", "Event-time watermark per partition (epoch s)", ["partition"])
WATERMARK_LAG = Gauge(
    "tally_dataflow_watermark_lag_seconds",
    "Wall clock minus the partition's watermark as of its last flush, at the scrape: grows when the"
    " partition stops flushing or its events run behind real time",
    ["partition"],
)
COMMITTED = Gauge("tally_dataflow_committed_offset", "Next Kafka offset committed with the rollups", ["partition"])
OPEN_CELLS = Gauge("tally_dataflow_open_cells", "Open minute and hour cells held in memory", ["partition"])
GC_SECONDS = Histogram(
    "tally_dataflow_gc_seconds",
    "Pauses of CPython's cycle collector, by generation (a full pass walks every live object)",
    ["generation"],
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)


_watermarks: dict[str, float] = {}
DEAD_LETTER_KINDS = ("schema", "ahead", "oversized", "tombstone", "refused")
STORES = ("kafka", "cassandra", "postgres")


def partition_started(partition: str) -> None:
    """Export every count of the partition at 0 from the start: a series that appears only with its
    first event makes rate() blind to that event and leaves dashboards with "no data"."""
    for counter in (EVENTS, MESSAGES_READ, BATCHES, LATE, DUPLICATES, ROWS, RAW):
        counter.labels(partition)
    for kind in DEAD_LETTER_KINDS:
        DEAD_LETTERS.labels(partition, kind)
    for store in STORES:
        for kind in ("transient", "refused"):
            STORE_FAILURES.labels(store, kind)


def watermark_at(partition: str, watermark: float) -> None:
    """Record the partition's watermark as of a flush; its lag is computed when Prometheus scrapes,
    so it keeps growing while nothing is flushed."""
    WATERMARK.labels(partition).set(watermark)
    if partition not in _watermarks:
        WATERMARK_LAG.labels(partition).set_function(lambda: time.time() - _watermarks[partition])
    _watermarks[partition] = watermark


def dead_letter_kind(reason: str) -> str:
    """The low-cardinality kind of a dead letter's reason (dataflows.aggregate writes them)."""
    if reason.startswith("refused by "):
        return "refused"
    if reason.startswith("timestamp: more than"):
        return "ahead"
    if reason.startswith("message: "):
        return "oversized" if "more than" in reason else "tombstone"
    return "schema"


def watch_gc() -> None:
    """Time every collector pass: a long one stalls every partition of the process at once."""
    import gc
    import time

    started = [0.0]

    def callback(phase: str, info: dict) -> None:
        if phase == "start":
            started[0] = time.perf_counter()
        else:
            GC_SECONDS.labels(str(info["generation"])).observe(time.perf_counter() - started[0])

    gc.callbacks.append(callback)


def serve(port: int, host: str) -> None:
    """Serve /metrics on host:port (Settings.metrics_host: loopback locally, all interfaces in a pod)."""
    start_http_server(port, addr=host)
