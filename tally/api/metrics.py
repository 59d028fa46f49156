"""The API's Prometheus metrics. With several uvicorn workers, prometheus_client's multiprocess
mode (PROMETHEUS_MULTIPROC_DIR, set by the supervisor) lets any worker answer /metrics for all."""

from prometheus_client import Counter, Histogram

ACCEPTED = Counter("tally_api_events_accepted_total", "Events acknowledged by Kafka and answered 202")
REJECTED = Counter("tally_api_events_rejected_total", "Events rejected by validation")
UNAVAILABLE = Counter("tally_api_events_unavailable_total", "Valid events answered 503 because Kafka did not ack")
LATENCY = Histogram(
    "tally_api_request_seconds",
    "Request latency by route",
    ["route", "status"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
