"""The API's Prometheus metrics. With several uvicorn workers, prometheus_client's multiprocess
mode (PROMETHEUS_MULTIPROC_DIR, set by the supervisor) lets any worker answer /metrics for all.

Labels stay low-cardinality: a rejected event is counted by the schema field at fault (never by a
value a client sent), a 503 by its cause."""

from prometheus_client import Counter, Histogram

from tally.events.schema import Event

ACCEPTED = Counter("tally_api_events_accepted_total", "Events acknowledged by Kafka and answered 202")
REJECTED = Counter(
    "tally_api_events_rejected_total",
    "Events rejected by validation, by the event field at fault (unreadable: not a JSON object; other:"
    " a field the schema does not have)",
    ["field"],
)
UNAVAILABLE = Counter(
    "tally_api_events_unavailable_total",
    "Valid events answered 503 because Kafka did not ack, by cause: timeout (no ack in time), refused"
    " (the broker refused), metadata (the topic's partitions could not be read), client (the producer failed)",
    ["cause"],
)
RATE_LIMITED = Counter(
    "tally_api_rate_limited_total",
    "Requests answered 429 because their client was past its rate limit, by what was limited (events, queries)",
    ["limit"],
)
LATENCY = Histogram(
    "tally_api_request_seconds",
    "Request latency by route and status (its _count is the requests by route and status)",
    ["route", "status"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
PRODUCE_SECONDS = Histogram(
    "tally_api_produce_seconds",
    "Time from handing a request's events to the producer to Kafka's acknowledgement of all of them",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
BODY_BYTES = Histogram(
    "tally_api_body_bytes",
    "Size of ingest bodies as read (after gzip), including bodies refused as too large",
    buckets=(256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 10485760),
)

_FIELDS = frozenset(Event.__struct_fields__)


def start() -> None:
    """Export the counts by field and cause at 0 from a worker's start, so rate() sees their first
    increase and dashboards show 0 rather than "no data"."""
    for field in (*_FIELDS, "unreadable", "other"):
        REJECTED.labels(field)
    for cause in ("timeout", "refused", "metadata", "client"):
        UNAVAILABLE.labels(cause)


def rejected_field(field: str | None) -> str:
    """The label for an event rejected at `field` (a path such as `attributes.x` counts as `attributes`)."""
    if field is None:
        return "unreadable"
    head = field.split(".", 1)[0]
    return head if head in _FIELDS else "other"
