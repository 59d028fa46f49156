"""The stream sensor: every 30 s, compare the events topic with what the dataflow has committed, and
report the stream's assets from that. It only reads (Kafka offsets, one PostgreSQL table) and starts
no run, so it costs the stream nothing.

- The topic is observed: end offsets, messages in the last minute, the dataflow's lag.
- The tables the dataflow writes are reported materialized whenever it has committed something new,
  stamped with the time up to which they hold every event (`dagster/last_updated_timestamp`).
- While the dataflow is caught up and nothing new arrives, an observation once a minute says the
  tables are still current, so a quiet stream is not mistaken for a stalled one.
- The tables' freshness checks (checks.py) are evaluated here from the same stamp, when their verdict
  changes and every few minutes: a dataflow that stops while events keep coming leaves the stamp
  behind, and they fail. (Run as jobs, each evaluation would start a process and load the
  definitions, several times an hour; from the UI they can still be run that way.)
"""

import json
from dataclasses import dataclass, replace

import dagster as dg

from orchestration.defs.resources import TallyResource
from orchestration.defs.stream.assets import EVENTS, STREAM_TABLES
from orchestration.defs.stream.checks import FRESHNESS_CHECK
from tally.storage.stream_progress import Progress, read

LAST_UPDATED = "dagster/last_updated_timestamp"
# A quiet, caught-up stream is re-confirmed this often, and the topic re-observed when unchanged.
STILL_CURRENT_S = 60
TOPIC_UNCHANGED_S = 300
FRESHNESS_UNCHANGED_S = 300  # an unchanged verdict is recorded again this often


@dataclass
class Seen:
    """The sensor's cursor: what it last reported."""

    version: str = ""  # the committed offsets last reported as a materialization
    as_of: float = 0.0  # the last `dagster/last_updated_timestamp` reported for the tables
    end_offsets: int = -1
    topic_at: float = 0.0
    fresh: bool | None = None  # the freshness verdict last recorded
    fresh_at: float = 0.0

    @classmethod
    def load(cls, cursor: str | None) -> "Seen":
        return cls(**json.loads(cursor)) if cursor else cls()

    def dump(self) -> str:
        return json.dumps(self.__dict__)


def reports(progress: Progress, seen: Seen, freshness_s: float) -> tuple[list, Seen]:
    """The asset events to report for this reading of the stream, and the new cursor."""
    events: list = []
    now = progress.read_at
    seen = replace(seen)
    if progress.end_offsets != seen.end_offsets or now - seen.topic_at >= TOPIC_UNCHANGED_S:
        events.append(dg.AssetObservation(EVENTS, metadata=_topic_metadata(progress)))
        seen.end_offsets, seen.topic_at = progress.end_offsets, now
    tables = {**_table_metadata(progress), LAST_UPDATED: dg.MetadataValue.timestamp(progress.as_of)}
    if progress.version != seen.version and progress.committed > 0:
        events += [dg.AssetMaterialization(key, metadata=tables) for key in STREAM_TABLES]
        seen.version, seen.as_of = progress.version, progress.as_of
    elif progress.as_of - seen.as_of >= STILL_CURRENT_S and progress.caught_up:
        events += [dg.AssetObservation(key, metadata=tables) for key in STREAM_TABLES]
        seen.as_of = progress.as_of
    if seen.as_of:  # nothing to judge before the first report
        events += _freshness(seen, now, freshness_s)
    return events, seen


def _freshness(seen: Seen, now: float, freshness_s: float) -> list[dg.AssetCheckEvaluation]:
    """The freshness checks' verdict from the stamp last reported; recorded when it changes, and
    every FRESHNESS_UNCHANGED_S. Mutates `seen`."""
    behind = now - seen.as_of
    fresh = behind <= freshness_s
    if fresh == seen.fresh and now - seen.fresh_at < FRESHNESS_UNCHANGED_S:
        return []
    seen.fresh, seen.fresh_at = fresh, now
    verdict = (
        f"current to {behind:.0f} s ago (allowed: {freshness_s:.0f} s)"
        if fresh
        else f"{behind:.0f} s behind the events topic (allowed: {freshness_s:.0f} s): is the dataflow running?"
    )
    metadata = {
        LAST_UPDATED: dg.MetadataValue.timestamp(seen.as_of),
        "behind_s": dg.MetadataValue.float(round(behind, 1)),
        "allowed_s": dg.MetadataValue.float(float(freshness_s)),
    }
    return [
        dg.AssetCheckEvaluation(
            asset_key=key,
            check_name=FRESHNESS_CHECK,
            passed=fresh,
            severity=dg.AssetCheckSeverity.ERROR,
            description=verdict,
            metadata=metadata,
        )
        for key in STREAM_TABLES
    ]


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
    events, seen = reports(progress, Seen.load(context.cursor), tally.settings().stream_freshness_s)
    return dg.SensorResult(asset_events=events, cursor=seen.dump())
