"""The rollup dataflow: Kafka `events` -> minute and hour rollups in PostgreSQL + raw events in Cassandra.

    kafka_in (a Kafka batch per item, per partition)
      -> aggregate (decode, dedup, fold into open minute buckets, closed ones into their hours; emit a
         flush every `flush_interval_s`)
      -> flush_due (drop the partition key)
      -> commit_out (DLQ + late topics, Cassandra, then rollups + offset in one PostgreSQL transaction)

Dead letters (messages the event schema refuses, events stamped too far ahead of their arrival,
tombstones, oversized messages, events a store refused) and late events are part of each flush and
always written to their topics (`events.dlq`, `events.late`) before the offset moves: never dropped.
"""

from __future__ import annotations

import argparse
import logging

import bytewax.operators as op
from bytewax.dataflow import Dataflow
from bytewax.inputs import Source
from bytewax.outputs import Sink

from dataflows.aggregate import Aggregate, AggregateLogic
from dataflows.commit_sink import CommitSink
from dataflows.kafka_source import KafkaPartitionsSource
from tally.settings import Settings, get_settings


def owned_partitions(partitions: int, process: int, processes: int) -> list[int]:
    return [p for p in range(partitions) if p % processes == process]


def get_flow(
    settings: Settings,
    partitions: list[int] | None = None,
    source: Source | None = None,
    sink: Sink | None = None,
) -> Dataflow:
    flow = Dataflow("tally_rollups")
    if source is None:
        source = KafkaPartitionsSource(
            settings, partitions if partitions is not None else list(range(settings.kafka_partitions))
        )
    batches = op.input("kafka_in", flow, source)
    aggregate = Aggregate(
        settings.allowed_lateness_s,
        settings.flush_interval_s,
        max_ahead_s=settings.max_ahead_s,
        idle_lag_s=settings.idle_lag_s,
        dedup=(settings.state_dir / "dataflow" / "dedup", settings.dedup_horizon_s)
        if settings.dedup_horizon_s
        else None,
        backlog=(settings.backlog_messages, settings.backlog_flush_interval_s),
        max_events=settings.flush_max_events,
        commit_interval=settings.backlog_commit_interval_s or None,
        dedup_filter_bytes=settings.dedup_filter_mib << 20,
    )
    flushes = op.stateful("aggregate", batches, lambda _resume: AggregateLogic(aggregate))
    due = op.key_rm("flush_due", flushes)
    op.output("commit_out", due, sink if sink is not None else CommitSink(settings))
    return flow


def main() -> None:
    from bytewax.run import cli_main

    from dataflows import metrics
    from tally.runtime import tune_gc

    parser = argparse.ArgumentParser(description="Run one process of Tally's rollup dataflow.")
    parser.add_argument("--process", type=int, default=0, help="this process' index")
    parser.add_argument("--processes", type=int, default=None, help="how many processes share the partitions")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = get_settings()
    processes = args.processes or settings.dataflow_processes
    metrics.serve(settings.dataflow_metrics_port + args.process, settings.metrics_host)
    parts = owned_partitions(settings.kafka_partitions, args.process, processes)
    tune_gc()
    metrics.watch_gc()
    # Each process is an independent single-worker dataflow over its own partitions: no data
    # crosses processes, so nothing is pickled between them.
    cli_main(get_flow(settings, parts), workers_per_process=1)


if __name__ == "__main__":
    main()
