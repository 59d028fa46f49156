"""The stream sensor: every 30 s, compare the events topic with what the dataflow has committed, and
report the stream's assets from that. It only reads (Kafka offsets, one PostgreSQL table) and starts
no run, so it costs the stream nothing.

- The topic is observed: end offsets, messages in the last minute, the dataflow's lag.
- The tables the dataflow writes are reported materialized whenever it has committed something new,
  stamped with the time up to which they hold every event (`dagster/last_updated_timestamp`).
- While the dataflow is caught up and nothing new arrives, an observation once a minute says the
  tables are still current, so a quiet stream is not mistaken for a stalled one.
The freshness checks (checks.py) read those stamps: a dataflow that stops while events keep coming
leaves them behind, and the checks fail.
"""

import json
from dataclasses import dataclass

import dagster as dg

from orchestration.defs.resources import TallyResource
from orchestration.defs.stream.assets import EVENTS, STREAM_TABLES
from tally.storage.stream_progress import Progress, read

LAST_UPDATED = "dagster/last_updated_timestamp"
# A quiet, caught-up stream is re-confirmed this often, and the topic re-observed when unchanged.
STILL_CURRENT_S = 60
TOPIC_UNCHANGED_S = 300


@dataclass
class Seen:
    """The sensor's cursor: what it last reported."""

    version: str = ""  # the committed offsets last reported as a materialization
    as_of: float = 0.0  # the last `dagster/last_updated_timestamp` reported for the tables
    end_offsets: int = -1
    topic_at: float = 0.0

    @classmethod
    def load(cls, cursor: str | None) -> "Seen":
        return cls(**json.loads(cursor)) if cursor else cls()

    def dump(self) -> str:
        return json.dumps(self.__dict__)


def reports(progress: Progress, seen: Seen) -> tuple[list, Seen]:
    """The asset events to report for this reading of the stream, and the new cursor."""
    events: list = []
    now = progress.read_at
    if progress.end_offsets != seen.end_offsets or now - seen.topic_at >= TOPIC_UNCHANGED_S:
        events.append(dg.AssetObservation(EVENTS, metadata=_topic_metadata(progress)))
        seen = Seen(seen.version, seen.as_of, progress.end_offsets, now)
    tables = {**_table_metadata(progress), LAST_UPDATED: dg.MetadataValue.timestamp(progress.as_of)}
    if progress.version != seen.version and progress.committed > 0:
        events += [dg.AssetMaterialization(key, metadata=tables) for key in STREAM_TABLES]
        seen = Seen(progress.version, progress.as_of, seen.end_offsets, seen.topic_at)
    elif progress.as_of - seen.as_of >= STILL_CURRENT_S and progress.caught_up:
        events += [dg.AssetObservation(key, metadata=tables) for key in STREAM_TABLES]
        seen = Seen(seen.version, progress.as_of, seen.end_offsets, seen.topic_at)
    return events, seen


def _topic_metadata(p: Progress) -> dict:
    return {
        "end_offsets": dg.MetadataValue.int(p.end_offsets),
        "messages_last_minute": dg.MetadataValue.int(p.messages_last_minute),
        "dataflow_lag_messages": dg.MetadataValue.int(p.lag),
        "per_partition": dg.MetadataValue.md(
            "| partition | end offset | committed | lag |\n|---|---|---|---|\n"
            + "\n".join(f"| {q.partition} | {q.end_offset} | {q.committed} | {q.lag} |" for q in p.partitions)
        ),
    }


def _table_metadata(p: Progress) -> dict:
    out = {
        "committed_messages": dg.MetadataValue.int(p.committed),
        "dataflow_lag_messages": dg.MetadataValue.int(p.lag),
        "behind_s": dg.MetadataValue.float(round(p.read_at - p.as_of, 1)),
    }
    if p.watermark is not None:
        out["watermark"] = dg.MetadataValue.timestamp(p.watermark)
    return out


@dg.sensor(
    name="stream_sensor",
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Reports the events topic and the tables the dataflow writes, from Kafka and stream_offsets.",
)
def stream_sensor(context: dg.SensorEvaluationContext, tally: TallyResource):
    try:
        progress = read(tally.settings())
    except Exception as e:  # a store down: say which and why; the freshness checks do the alerting
        return dg.SkipReason(f"cannot read the stream's progress: {e}")
    events, seen = reports(progress, Seen.load(context.cursor))
    return dg.SensorResult(asset_events=events, cursor=seen.dump())
