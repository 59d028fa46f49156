"""The rollup tables' suite (rollup_1m and rollup_1h in PostgreSQL), and the window query it runs on.

The batch is one query over both tables for a window of whole hours, so a check reads that window's
rows (the bucket index), never the whole table; the datasource materialises it into a temporary
table once, so every expectation sees the same snapshot and `hll_cardinality` runs once a row.

Why there is no "no gaps in a series" expectation: a (event_type, source) with no event in a minute
has no row for that minute (rows are written for cells that got events), and each Kafka partition
writes its own rows, so a series legitimately skips minutes in every partition. What does hold is
the hour contract of the dataflow (tally.aggregator): when an hour closes in a partition (its
watermark is `allowed_lateness_s` past the hour's end, as in tally.storage.corrections) the
partition writes the hour row, in the same transaction as its last minute rows, as exactly the sum
of its minute rows; the correction step keeps both in step. So for every closed hour: minute rows
<=> an hour row, with equal counts and min/max, and every row final. Sums are floats added in
minute order by the dataflow and in any order by SQL, so they are left out.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from expectations.outcome import with_severity_meta
from tally.events.schema import EVENT_TYPE_PATTERN
from tally.settings import Settings
from tally.sketch import STANDARD_ERROR

SUITE = "tally.rollups"
HOUR = timedelta(hours=1)
# Beyond the exact (EXPLICIT) range a sketch's estimate may exceed the true count. Rows where every
# event has its own user are common (one page view per visitor a minute), so the margin must make a
# false alarm vanishingly rare: 6 standard errors (about one in a billion, were the error normal).
# A sketch gone wrong (merged twice, corrupt) is typically off by far more.
ESTIMATE_SLACK = 1 + 6 * STANDARD_ERROR
# The hll storage format's type nibble (first byte, low 4 bits): EMPTY and EXPLICIT hold exact sets.
_EXACT_TYPES = "(1, 2)"


def hour_window(start: datetime, end: datetime) -> tuple[datetime, datetime]:
    """[start, end) widened to whole hours: an hour row is checked together with its minutes."""
    start, end = start.astimezone(UTC), end.astimezone(UTC)
    low = start.replace(minute=0, second=0, microsecond=0)
    high = end.replace(minute=0, second=0, microsecond=0)
    return low, high + HOUR if high < end else high


def rows_query(settings: Settings, start: datetime, end: datetime, topic: str, has_hll: bool) -> str:
    """The batch: every minute and hour row whose bucket is in [start, end), with the unique-user
    estimate, the most it may be for the row's event count, and whether the row's hour has closed
    in its partition (no offsets row for `topic`: not closed, so not judged)."""
    low, high = f"timestamptz '{start.isoformat()}'", f"timestamptz '{end.isoformat()}'"
    kind = "(get_byte(r.users, 0) & 15)"
    if has_hll:
        users = "hll_cardinality(cast(r.users as hll))"
    else:  # without the extension only exact sketches are counted: 3 header bytes, then 8 per hash
        users = f"case {kind} when 1 then 0 when 2 then (length(r.users) - 3) / 8 end"
    return f"""
select r.width, r.bucket, r.event_type, r.source, r.kafka_partition, r.event_count, r.value_count,
       r.value_min, r.value_max, r.final,
       case when length(r.users) > 0 then {users} end as unique_users,
       case when length(r.users) > 0 and {kind} in {_EXACT_TYPES} then r.event_count
            else ceil(r.event_count * {ESTIMATE_SLACK!r})::bigint end as users_bound,
       coalesce(date_bin('1 hour', r.bucket, timestamptz '1970-01-01Z') + interval '1 hour'
                + make_interval(secs => {int(settings.allowed_lateness_s)}) <= o.watermark, false) as hour_closed
from (
    select 60 as width, * from rollup_1m where bucket >= {low} and bucket < {high}
    union all
    select 3600 as width, * from rollup_1h where bucket >= {low} and bucket < {high}
) as r
left join stream_offsets as o on o.topic = {_literal(topic)} and o.kafka_partition = r.kafka_partition
""".strip()  # a query asset must begin with SELECT


# Each closed hour of a (event_type, source, partition): its minutes added up beside its hour row,
# from the batch only. A side that is missing comes out null.
_HOUR_PAIRS = """
select hour, event_type, source, kafka_partition, m.minute_rows,
       m.event_count as minutes_event_count, h.event_count as hour_event_count,
       m.value_count as minutes_value_count, h.value_count as hour_value_count,
       m.value_min as minutes_value_min, h.value_min as hour_value_min,
       m.value_max as minutes_value_max, h.value_max as hour_value_max
from (
    select date_bin('1 hour', bucket, timestamptz '1970-01-01Z') as hour, event_type, source, kafka_partition,
           count(*) as minute_rows, sum(event_count)::bigint as event_count,
           sum(value_count)::bigint as value_count, min(value_min) as value_min, max(value_max) as value_max
    from {batch} where width = 60 and hour_closed
    group by 1, 2, 3, 4
) as m
full join (
    select bucket as hour, event_type, source, kafka_partition, event_count, value_count, value_min, value_max
    from {batch} where width = 3600 and hour_closed
) as h using (hour, event_type, source, kafka_partition)
"""
_PAIRS_WHERE = "select * from (" + _HOUR_PAIRS + ") as p where {condition}"


def _pairs(condition: str) -> str:
    return _PAIRS_WHERE.replace("{condition}", condition)


def build_suite(settings: Settings):
    """The suite, built fresh (GX is imported here: it costs seconds, Dagster loads often). Every
    expectation is an invariant of how Tally writes rollups, so all keep GX's default severity,
    critical (ERROR in Dagster)."""
    import great_expectations as gx
    import great_expectations.expectations as gxe

    suite = gx.ExpectationSuite(name=SUITE, meta={"dataset": "PostgreSQL rollup_1m and rollup_1h, whole hours"})
    for expectation in (*_row_rules(gxe), *_hour_rules(gxe)):
        suite.add_expectation(expectation)
    return with_severity_meta(suite)


def _row_rules(gxe) -> list:
    """What holds for every row on its own."""
    return [
        # The primary key: a null would be a schema gone wrong.
        *(
            gxe.ExpectColumnValuesToNotBeNull(column=column, description=f"{column} is never null")
            for column in ("bucket", "event_type", "source", "kafka_partition")
        ),
        *(
            gxe.ExpectColumnValuesToBeBetween(column=column, min_value=0, description=f"{column} is not negative")
            for column in ("event_count", "value_count")
        ),
        gxe.ExpectColumnPairValuesAToBeGreaterThanB(
            column_A="event_count",
            column_B="value_count",
            or_equal=True,
            description="value_count <= event_count (only events count values)",
        ),
        gxe.ExpectColumnPairValuesAToBeGreaterThanB(
            column_A="value_max",
            column_B="value_min",
            or_equal=True,
            ignore_row_if="either_value_is_missing",  # a cell without values has neither
            description="value_min <= value_max",
        ),
        gxe.UnexpectedRowsExpectation(
            unexpected_rows_query="select * from {batch} where (value_count = 0) <> (value_min is null)"
            " or (value_count = 0) <> (value_max is null)",
            description="value_min and value_max are null exactly when value_count is 0",
        ),
        gxe.ExpectColumnPairValuesAToBeGreaterThanB(
            column_A="users_bound",
            column_B="unique_users",
            or_equal=True,
            ignore_row_if="either_value_is_missing",
            description="unique users <= event_count (exact sketches; estimated ones within 6 standard errors)",
        ),
        gxe.ExpectColumnValuesToMatchRegex(
            column="event_type",
            regex=EVENT_TYPE_PATTERN,  # PostgreSQL's `$` is the end of the string, as ingest means it
            description="event_type matches the pattern ingest enforces",
        ),
    ]


def _hour_rules(gxe) -> list:
    """The hour contract, for closed hours (see the module docstring)."""
    pairs = [
        ("p.hour_event_count is null", "every closed hour with minute rows has its hour row"),
        ("p.minute_rows is null", "every hour row has minute rows"),
        (
            "p.minute_rows is not null and p.hour_event_count is not null and ("
            "p.hour_event_count <> p.minutes_event_count or p.hour_value_count <> p.minutes_value_count"
            " or p.hour_value_min is distinct from p.minutes_value_min"
            " or p.hour_value_max is distinct from p.minutes_value_max)",
            "an hour row's counts, min and max equal its minute rows'",
        ),
    ]
    return [
        *(gxe.UnexpectedRowsExpectation(unexpected_rows_query=_pairs(c), description=d) for c, d in pairs),
        gxe.UnexpectedRowsExpectation(
            unexpected_rows_query="select * from {batch} where hour_closed and not final",
            description="every row of a closed hour is final",
        ),
    ]


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"
