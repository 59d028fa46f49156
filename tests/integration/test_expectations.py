"""The Great Expectations suites against the real stores: healthy data passes, each planted fault
fails the expectation it breaks (and only that one), and an unreachable store is named.

Rollup rows are planted with `gxt_` event types in 2001, in partitions 90-92 that no dataflow
owns; the hours' closedness comes from watermarks of a topic of their own. Raw events go to
Cassandra through the raw writer, in `gxt_` types too. Everything is deleted afterwards.
"""

from __future__ import annotations

import socket
from datetime import UTC, datetime, timedelta

import pytest

from expectations import StoreUnavailable, validate_raw_sample, validate_rollups
from tally.cells import Acc, RollupRow
from tally.events.schema import Event, encode_event
from tally.flush import RawBatch
from tally.sketch import hash_user
from tally.storage import raw_events, raw_writer, rollup_store

TOPIC = "gxt-expectations"
CLOSED, OPEN_AFTER_11, NO_WATERMARK = 90, 91, 92  # partitions, by what their watermark says
H = timedelta(hours=1)
M = timedelta(minutes=1)


@pytest.fixture(scope="module")
def pg(stack):
    with rollup_store.connect(stack, autocommit=True) as conn:
        conn.execute(
            "insert into stream_offsets (topic, kafka_partition, next_offset, watermark) values"
            " (%s, %s, 0, now()), (%s, %s, 0, '2001-01-01T11:30Z')"
            " on conflict (topic, kafka_partition) do update set watermark = excluded.watermark",
            (TOPIC, CLOSED, TOPIC, OPEN_AFTER_11),
        )
        yield conn
        for table in ("rollup_1m", "rollup_1h"):
            conn.execute(f"delete from {table} where event_type like 'gxt\\_%' and bucket < '2002-01-01'")
        conn.execute("delete from stream_offsets where topic = %s", (TOPIC,))


@pytest.fixture(scope="module")
def raw(stack):
    cluster = raw_events.cluster(stack)
    writer = raw_writer.RawEventWriter(cluster.connect(stack.cassandra_keyspace), stack)
    written: list[tuple[RawBatch, int]] = []

    def write(events: list[Event], shard: int = 0) -> None:
        batch = RawBatch()
        lines = [encode_event(e) for e in events]
        batch.add(events, [int(e.timestamp.timestamp()) for e in events], list(range(len(events))), lines)
        writer.write(batch, shard)
        written.append((batch, shard))

    yield write
    for batch, shard in written:
        writer.forget(batch, shard)
    cluster.shutdown()


def acc(values=(), users=(), count=None) -> Acc:
    a = Acc()
    for i, v in enumerate(values or [None] * (count or 1)):
        a.add(v, users[i % len(users)] if users else None)
    if count is not None:
        a.count = count
    return a


def plant(conn, *rows: RollupRow) -> None:
    with conn.transaction():
        for r in rows:
            rollup_store.upsert_row(conn, r)


def minutes_and_hour(event_type: str, partition: int, minutes: list[datetime], hour_row: bool = True):
    """Minute rows at these times and, if asked, their hour row as their merge (as the dataflow)."""
    rows, hour = [], Acc()
    for i, t in enumerate(minutes):
        a = acc([float(i), float(i + 3)], [f"u{i}", "u0"])
        rows.append(RollupRow(int(t.timestamp()), event_type, "web", partition, a, True))
        hour.merge(acc([float(i), float(i + 3)], [f"u{i}", "u0"]))
    if hour_row:
        start = int(minutes[0].replace(minute=0).timestamp())
        rows.append(RollupRow(start, event_type, "web", partition, hour, True, 3600))
    return rows


def failed(outcome) -> dict[str, object]:
    return {e.description: e for e in outcome.expectations if not e.success}


def test_healthy_rollups_pass_every_expectation(settings, pg):
    h10 = datetime(2001, 1, 1, 10, tzinfo=UTC)
    plant(
        pg,
        *minutes_and_hour("gxt_ok", CLOSED, [h10, h10 + 5 * M, h10 + 59 * M]),
        *minutes_and_hour("gxt_ok", CLOSED, [h10 + H + 30 * M]),
        # Hour 10 has closed for this partition, hour 11 has not: minutes without their hour row.
        *minutes_and_hour("gxt_ok", OPEN_AFTER_11, [h10 + 2 * M]),
        *minutes_and_hour("gxt_ok", OPEN_AFTER_11, [h10 + H + 2 * M], hour_row=False),
        RollupRow(int((h10 + 7 * M).timestamp()), "gxt_novalues", "app", NO_WATERMARK, acc(count=3), True),
    )
    outcome = validate_rollups(settings, h10, h10 + 2 * H, topic=TOPIC)
    assert outcome.success, outcome.summary()
    assert outcome.severity is None and outcome.statistics["evaluated_expectations"] == len(outcome.expectations)
    assert all(": holds" in e.sentence for e in outcome.expectations)
    assert outcome.result_json["suite_name"] == "tally.rollups"


def test_a_row_with_min_above_max_fails_naming_the_column_pair(settings, pg):
    t = datetime(2001, 2, 1, 10, 3, tzinfo=UTC)
    bad = acc([1.0, 5.0])
    bad.value_min, bad.value_max = 5.0, 1.0
    plant(pg, RollupRow(int(t.timestamp()), "gxt_minmax", "web", NO_WATERMARK, bad, True))
    outcome = validate_rollups(settings, t, t + M, topic=TOPIC)
    assert not outcome.success and outcome.severity == "ERROR"
    (only,) = failed(outcome).values()
    assert only.columns == ("value_max", "value_min") and only.unexpected_count == 1
    assert only.expectation_type == "expect_column_pair_values_a_to_be_greater_than_b"
    assert "value_min <= value_max" in only.sentence and "gxt_minmax" in str(only.unexpected_values)


def test_a_row_with_more_unique_users_than_events_fails(settings, pg):
    t = datetime(2001, 3, 1, 10, 3, tzinfo=UTC)
    crowded = acc(count=2)
    crowded.users.add_hashes([hash_user(f"user-{i}") for i in range(5)])
    plant(pg, RollupRow(int(t.timestamp()), "gxt_users", "web", NO_WATERMARK, crowded, True))
    outcome = validate_rollups(settings, t, t + M, topic=TOPIC)
    (only,) = failed(outcome).values()
    assert only.columns == ("users_bound", "unique_users") and only.unexpected_count == 1


def test_closed_hours_whose_hour_row_is_missing_alone_or_off_from_its_minutes_fail(settings, pg):
    h = datetime(2001, 4, 1, 10, tzinfo=UTC)
    off = minutes_and_hour("gxt_hours_off", CLOSED, [h + 3 * M, h + 9 * M])
    off[-1].acc.count += 1  # an hour row that is not the sum of its minutes
    plant(
        pg,
        *minutes_and_hour("gxt_hours", CLOSED, [h + 3 * M, h + 4 * M], hour_row=False),
        *minutes_and_hour("gxt_hours", CLOSED, [h + H + 3 * M])[-1:],  # the hour row alone
        *off,
    )
    outcome = validate_rollups(settings, h, h + 2 * H, topic=TOPIC)
    found = failed(outcome)
    assert set(found) == {
        "every closed hour with minute rows has its hour row",
        "every hour row has minute rows",
        "an hour row's counts, min and max equal its minute rows'",
    }
    assert all(e.unexpected_count == 1 and e.severity == "ERROR" for e in found.values())
    assert found["every hour row has minute rows"].unexpected_values[0]["hour"].startswith("2001-04-01 11:00")


def test_an_unreachable_postgres_is_named_with_its_address(settings):
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    wrong = settings.model_copy(update={"pg_port": port})
    now = datetime.now(UTC)
    with pytest.raises(StoreUnavailable, match=f"^PostgreSQL at 127.0.0.1:{port}: .*refused"):
        validate_rollups(wrong, now - H, now)
    with pytest.raises(StoreUnavailable, match=f"^PostgreSQL at 127.0.0.1:{port}: "):
        validate_raw_sample(wrong, now - H, now)


def test_an_unreachable_cassandra_is_named_with_its_address(settings):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    wrong = settings.model_copy(update={"cassandra_port": port})
    now = datetime.now(UTC)
    with pytest.raises(StoreUnavailable, match=f"^Cassandra at 127.0.0.1:{port}: "):
        validate_raw_sample(wrong, now - H, now, event_types=["gxt_any"])


def events(event_type: str, start: datetime, n: int) -> list[Event]:
    return [
        Event(f"{event_type}-{i}", event_type, start + timedelta(seconds=7 * i), "web", f"u{i % 4}", float(i),
              {"plan": "pro", "n": i})
        for i in range(n)
    ]  # fmt: skip


def test_a_healthy_raw_sample_passes(settings, pg, raw):
    start = datetime(2001, 5, 1, 10, tzinfo=UTC)
    raw(events("gxt_raw_ok", start, 20)[:12], shard=0)
    raw(events("gxt_raw_ok", start, 20)[12:], shard=1)
    # The sample's event types are those the rollups hold in the window.
    plant(pg, RollupRow(int(start.timestamp()), "gxt_raw_ok", "web", NO_WATERMARK, acc(count=20), True))
    outcome = validate_raw_sample(settings, start, start + 5 * M, limit=100)
    assert outcome.success, outcome.summary()
    assert outcome.details["rows"] == 20 and outcome.details["event_types"] == ["gxt_raw_ok"]


def test_raw_events_ingest_would_refuse_fail_their_expectations(settings, raw):
    start = datetime(2001, 6, 1, 10, tzinfo=UTC)
    good = events("gxt_raw_mixed", start, 6)
    good[1].source = "we\x01b"  # a control character
    good[2].attributes = {f"k{i}": i for i in range(33)}  # one attribute too many
    raw(good)
    raw([Event("bad-type-1", "gxt_Raw.Bad", start + timedelta(seconds=3))])  # uppercase: not the pattern
    outcome = validate_raw_sample(settings, start, start + 5 * M, event_types=["gxt_raw_mixed", "gxt_Raw.Bad"])
    found = failed(outcome)
    assert set(found) == {
        "event_type matches the pattern ingest enforces",
        "source has no control characters (U+0000-U+001F)",
        "at most 32 attributes",
        "every event decodes under the event schema",  # msgspec's own limit, stated in its words
    }, outcome.summary()
    assert all(e.unexpected_count == 1 and e.severity == "ERROR" for e in found.values())
    assert found["event_type matches the pattern ingest enforces"].unexpected_values[0]["event_type"] == "gxt_Raw.Bad"


def test_a_raw_event_far_in_the_future_is_a_warning(settings, raw):
    start = (datetime.now(UTC) + timedelta(days=2)).replace(minute=0, second=0, microsecond=0)
    raw(events("gxt_raw_future", start + 10 * M, 1))
    outcome = validate_raw_sample(settings, start, start + H, event_types=["gxt_raw_future"])
    (only,) = failed(outcome).values()
    assert only.columns == ("seconds_ahead",) and only.unexpected_count == 1
    assert only.severity == "WARN" and outcome.severity == "WARN"
