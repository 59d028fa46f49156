"""Running the suites: the small API the Dagster layer calls.

    validate_rollups(settings, start, end) -> SuiteOutcome
    validate_raw_sample(settings, start, end, limit) -> SuiteOutcome

Each call builds an ephemeral GX context with its datasource, batch definition, suite, validation
definition and checkpoint as code, runs the checkpoint and returns a plain SuiteOutcome. GX is
imported inside (about 3 s and 250 MB: Dagster loads definitions often and should not pay that).
A store that cannot be reached raises StoreUnavailable naming it, its address and the reason.
"""

from __future__ import annotations

from datetime import UTC, datetime
from urllib.parse import quote

import psycopg

from expectations import raw_event_suite, raw_sample, rollup_suite
from expectations.outcome import StoreUnavailable, SuiteOutcome, outcome_of
from tally.settings import Settings

# GX keeps at most 200 unexpected rows per expectation even in COMPLETE, which also keeps the rows
# an unexpected-rows query found (SUMMARY keeps only their count).
RESULT_FORMAT = {"result_format": "COMPLETE", "partial_unexpected_count": 5}
ROLLUP_KEYS = ["width", "bucket", "event_type", "source", "kafka_partition"]
RAW_KEYS = ["chunk_event_type", "shard", "event_id"]


def validate_rollups(settings: Settings, start: datetime, end: datetime, topic: str | None = None) -> SuiteOutcome:
    """Check the minute and hour rollup rows of [start, end), widened to whole hours. `topic`: whose
    partition watermarks say which hours have closed (default: the events topic)."""
    start, end = rollup_suite.hour_window(start, end)
    has_hll = _postgres_has_hll(settings)
    context = _context()
    url = (
        f"postgresql+psycopg://{quote(settings.pg_user, safe='')}:{quote(settings.pg_password, safe='')}"
        f"@{settings.pg_host}:{settings.pg_port}/{quote(settings.pg_database, safe='')}"
    )
    from great_expectations.datasource.fluent.interfaces import TestConnectionError

    try:
        source = context.data_sources.add_or_update_postgres(
            name="tally_postgres", connection_string=url, create_temp_table=True
        )
    except TestConnectionError as e:  # GX tries the connection here; it answered a moment ago
        raise StoreUnavailable.of("PostgreSQL", settings.pg_host, settings.pg_port, e) from e
    query = rollup_suite.rows_query(settings, start, end, topic or settings.events_topic, has_hll)
    batch = source.add_query_asset(name="rollup_rows", query=query).add_batch_definition_whole_table("window")
    try:
        result = _run(context, batch, rollup_suite.build_suite(settings), ROLLUP_KEYS, batch_parameters=None)
    finally:  # its connection (and the temporary table) go now, not whenever the collector runs
        source.get_execution_engine().close()
    return outcome_of(result, {"start": start, "end": end, "hll": has_hll})


def validate_raw_sample(
    settings: Settings,
    start: datetime,
    end: datetime,
    limit: int = 1000,
    event_types: list[str] | None = None,
    max_types: int = 100,
) -> SuiteOutcome:
    """Check up to `limit` raw events stored in [start, end): the newest of the (at most
    `max_types`) busiest event types with minute rows in the window, plus `event_types`."""
    start, end = start.astimezone(UTC), end.astimezone(UTC)
    types = raw_sample.event_types_in_rollups(settings, start, end, max_types)
    types += [t for t in event_types or () if t not in types]
    stored = raw_sample.read_sample(settings, types, start, end, limit)
    checked_at = datetime.now(UTC)
    df = raw_event_suite.frame(stored, checked_at)
    context = _context()
    batch = (
        context.data_sources.add_or_update_pandas(name="tally_raw_sample")
        .add_dataframe_asset(name="raw_events")
        .add_batch_definition_whole_dataframe("sample")
    )
    result = _run(context, batch, raw_event_suite.build_suite(settings), RAW_KEYS, batch_parameters={"dataframe": df})
    details = {"start": start, "end": end, "checked_at": checked_at, "rows": len(df), "event_types": types}
    return outcome_of(result, details)


def _run(context, batch, suite, keys: list[str], batch_parameters: dict | None):
    import great_expectations as gx

    suite = context.suites.add(suite)
    definition = context.validation_definitions.add(
        gx.ValidationDefinition(name=f"{suite.name}.window", data=batch, suite=suite)
    )
    checkpoint = context.checkpoints.add(
        gx.Checkpoint(
            name=suite.name,
            validation_definitions=[definition],
            result_format={**RESULT_FORMAT, "unexpected_index_column_names": keys},
        )
    )
    run = checkpoint.run(batch_parameters=batch_parameters)
    (result,) = run.run_results.values()
    return result


def _context():
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    return context


def _postgres_has_hll(settings: Settings) -> bool:
    """Reach PostgreSQL before GX does (a clear StoreUnavailable rather than GX's wrapped error),
    and learn whether unique-user sketches can be estimated in SQL."""
    try:
        with psycopg.connect(settings.pg_dsn, connect_timeout=5) as conn:
            return conn.execute("select exists (select 1 from pg_extension where extname = 'hll')").fetchone()[0]
    except psycopg.OperationalError as e:
        raise StoreUnavailable.of("PostgreSQL", settings.pg_host, settings.pg_port, e) from e
