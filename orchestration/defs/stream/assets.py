"""The stream's assets: the events topic and the tables the dataflow writes.

Dagster does not run the stream: the dataflow runs on its own (`tally up`), writing every table below
in one commit per flush. These are external assets; the stream sensor (sensors.py) reports them
when the dataflow commits, and freshness checks (checks.py) fail when they stop keeping up.
"""

import dagster as dg

GROUP = "stream"

EVENTS = dg.AssetKey(["stream", "events"])
RAW_EVENTS = dg.AssetKey(["stream", "raw_events"])
ROLLUP_1M = dg.AssetKey(["stream", "rollup_1m"])
ROLLUP_1H = dg.AssetKey(["stream", "rollup_1h"])
LATE_EVENTS = dg.AssetKey(["stream", "late_events"])
STREAM_OFFSETS = dg.AssetKey(["stream", "stream_offsets"])

events_topic = dg.AssetSpec(
    EVENTS,
    group_name=GROUP,
    kinds={"kafka"},
    description=(
        "Every event accepted by the API (`POST /api/events`), in the Kafka topic `events`, partitioned by"
        " event type. Observed every 30 s: end offsets, messages received in the last minute, and the"
        " dataflow's lag (messages not yet in any table below)."
    ),
)

raw_events = dg.AssetSpec(
    RAW_EVENTS,
    group_name=GROUP,
    kinds={"cassandra"},
    deps=[EVENTS],
    description=(
        "Each event as it was sent, in Cassandra (keyspace `tally`), kept 35 days: what"
        " `/api/filtered_events` answers from and what the reconciliation counts the rollups against."
        " Written by the dataflow before it commits the rollups of the same events."
    ),
)

rollup_1m = dg.AssetSpec(
    ROLLUP_1M,
    group_name=GROUP,
    kinds={"postgres"},
    deps=[EVENTS],
    description=(
        "Per minute, event type and source: count, sum, min and max of `value`, and a unique-user sketch"
        " (postgresql-hll). One row per Kafka partition: totals sum the partitions and merge the sketches"
        " with `hll_union_agg`. Rows update every second while their minute is open and become final"
        " when the watermark passes it; the late-event correction can still add to final rows."
    ),
)

rollup_1h = dg.AssetSpec(
    ROLLUP_1H,
    group_name=GROUP,
    kinds={"postgres"},
    deps=[ROLLUP_1M],
    description=(
        "Per hour, event type and source: the hour's minute rows merged, written once when the hour"
        " closes (and by the late-event correction). Hourly and daily answers and the dbt rollups read these."
    ),
)

late_events = dg.AssetSpec(
    LATE_EVENTS,
    group_name=GROUP,
    kinds={"postgres"},
    deps=[EVENTS],
    description=(
        "The late ledger: events that arrived after their minute closed (beyond the allowed lateness)."
        " Never dropped: they show as `late_count` in answers until the late-event correction adds them to"
        " the rollups."
    ),
)

stream_offsets = dg.AssetSpec(
    STREAM_OFFSETS,
    group_name=GROUP,
    kinds={"postgres"},
    deps=[EVENTS],
    description=(
        "Where each Kafka partition's reading resumes, and its watermark (the event time before which its"
        " minutes are closed and final). Committed with the rollups, so it says exactly how much of the"
        " topic every table here reflects."
    ),
)

# What the dataflow commits together, in one transaction per flush (raw events just before it).
STREAM_TABLES = [RAW_EVENTS, ROLLUP_1M, ROLLUP_1H, LATE_EVENTS, STREAM_OFFSETS]
