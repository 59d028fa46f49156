"""The dataflow graph with Bytewax's TestingSource/TestingSink, on one and on two workers."""

import random
from datetime import UTC, datetime, timedelta

import pytest
from bytewax.testing import TestingSink, TestingSource, cluster_main, run_main

from dataflows.aggregate import Aggregate
from dataflows.flow import get_flow, owned_partitions
from dataflows.kafka_source import KafkaBatch, Restore
from tally.events.schema import Event, encode_event
from tally.flush import position
from tally.settings import Settings

T0 = datetime(2026, 1, 5, 10, 0, tzinfo=UTC)  # in the past: the flow ignores event times far ahead of the clock


def message(i: int, seconds: float, event_type: str = "click") -> bytes:
    return encode_event(Event(f"e{i}", event_type, T0 + timedelta(seconds=seconds), "web", f"u{i % 5}", float(i)))


def batches(partition: int, values: list[bytes], size: int, first_offset: int = 0):
    out = []
    for i in range(0, len(values), size):
        chunk = values[i : i + size]
        offsets = list(range(first_offset + i, first_offset + i + len(chunk)))
        restore = Restore(None, {}) if i == 0 else None
        out.append((str(partition), KafkaBatch(partition, chunk, offsets, offsets[-1] + 1, restore)))
    return out


@pytest.fixture(autouse=True)
def state_dir(tmp_path, monkeypatch):
    """Each test's dedup stores start empty: ids like e0 recur from test to test."""
    monkeypatch.setenv("TALLY_STATE_DIR", str(tmp_path))


def run(items, workers: int):
    settings = Settings(flush_interval_s=0.0, allowed_lateness_s=120)
    out: list = []
    flow = get_flow(settings, source=TestingSource(items), sink=TestingSink(out))
    if workers == 1:
        run_main(flow)
    else:
        cluster_main(flow, [], 0, worker_count_per_proc=workers)
    return out


@pytest.mark.parametrize("workers", [1, 2])
def test_counts_per_minute_and_offsets_are_exact_on_one_and_two_workers(workers):
    p0 = [message(i, i % 120) for i in range(300)]
    p1 = [message(1000 + i, 30 + i % 60, "view") for i in range(200)]
    items = [x for pair in zip(batches(0, p0, 50), batches(1, p1, 50) + [None] * 2, strict=False) for x in pair if x]
    flushes = run(items, workers)
    latest = {}
    for f in flushes:
        for r in f.rows:
            if r.width == 60:
                latest[(r.partition, r.bucket, r.event_type)] = r.acc.count
    minute = int(T0.timestamp())
    expected = {
        (0, minute, "click"): sum(1 for i in range(300) if i % 120 < 60),
        (0, minute + 60, "click"): sum(1 for i in range(300) if i % 120 >= 60),
        (1, minute, "view"): sum(1 for i in range(200) if 30 + i % 60 < 60),
        (1, minute + 60, "view"): sum(1 for i in range(200) if 30 + i % 60 >= 60),
    }
    assert latest == expected
    assert max(f.next_offset for f in flushes if f.partition == 0) == 300
    assert max(f.next_offset for f in flushes if f.partition == 1) == 200
    assert sum(len(f.raw) for f in flushes) == 500


def test_malformed_messages_go_to_the_dead_letter_list_with_offset_and_reason():
    values = [message(0, 1), b'{"event_id":"x","event_type":"BAD","timestamp":"2026-11-26T10:00:00Z"}', b"not json"]
    (flush,) = run(batches(0, values, 3), 1)
    assert [(o, reason.split(":")[0]) for o, _v, reason in flush.invalid] == [
        (position(1, 0), "event_type"),
        (position(2, 0), "not valid JSON"),
    ]
    assert [o for o, _v in flush.raw.items()] == [position(0, 0)]
    assert flush.rows[0].acc.count == 1 and flush.next_offset == 3


def test_late_events_are_routed_to_the_late_list_not_dropped():
    values = [message(0, 0), message(1, 600), message(2, 10)]  # e2 is 590 s behind: beyond 120 s lateness
    flushes = run(batches(0, values, 2), 1)
    assert [e.event_id for f in flushes for e in f.late] == ["e2"]
    # Late is about the rollup only: raw storage still keeps the event, with its position and bytes.
    raw = [item for f in flushes for item in f.raw.items()]
    assert raw == [(position(i, 0), values[i]) for i in range(3)]


def test_a_message_of_several_ndjson_events_is_decoded_line_by_line():
    good = [message(i, i) for i in range(3)]
    bad = b'{"event_id":"x","event_type":"BAD","timestamp":"2026-11-26T10:00:00Z"}'
    batch = b"\n".join([good[0], bad, good[1]])
    items = [("0", KafkaBatch(0, [batch, good[2]], [7, 8], 9, Restore(None, {})))]
    (flush,) = run(items, 1)
    assert [o for o, _v in flush.raw.items()] == [position(7, 0), position(7, 2), position(8, 0)]
    assert [(o, v) for o, v, _r in flush.invalid] == [(position(7, 1), bad)]
    assert sum(r.acc.count for r in flush.rows if r.width == 60) == 3


def test_later_copies_of_an_event_id_are_counted_and_stored_once():
    values = [message(i, i) for i in range(6)]
    copies = [values[1], values[4], values[1]]  # a client retry, twice, in later messages
    flushes = run(batches(0, values + copies, 2), 1)
    latest = {r.bucket: r.acc.count for f in flushes for r in f.rows if r.width == 60}
    assert sum(latest.values()) == 6
    assert sorted(o >> 10 for f in flushes for o, _v in f.raw.items()) == list(range(6))


def test_processes_split_the_partitions_between_them():
    assert owned_partitions(4, 0, 2) == [0, 2] and owned_partitions(4, 1, 2) == [1, 3]
    assert sorted(owned_partitions(5, 0, 3) + owned_partitions(5, 1, 3) + owned_partitions(5, 2, 3)) == list(range(5))


def test_a_caught_up_partition_lets_its_watermark_follow_the_wall_clock():
    t0 = int(T0.timestamp())
    step = Aggregate(120, 0.0, clock=lambda: 0.0, idle_lag_s=60, wall_clock=lambda: t0 + 600)
    state, flush = step(None, KafkaBatch(0, [message(0, 0)], [0], 1, Restore(None, {})))
    assert flush.watermark == t0
    state, flush = step(state, KafkaBatch(0, [], [], 1))  # an empty poll with a backlog behind it
    assert flush is None and state.agg.watermark == t0
    state, flush = step(state, KafkaBatch(0, [], [], 1, caught_up=True))
    assert flush.watermark == t0 + 540  # persisted with the offset, so queries see it
    assert [(r.bucket - t0, r.final) for r in flush.rows if r.width == 60] == [(0, True)]
    # The usual lateness now counts from there: 60 s behind is on time, 240 s behind is late.
    state, flush = step(state, KafkaBatch(0, [message(1, 480), message(2, 300)], [1, 2], 3))
    assert [e.event_id for e in flush.late] == ["e2"]
    assert [r.bucket - t0 for r in flush.rows if r.width == 60] == [480]


def test_after_a_crash_the_interrupted_flushes_are_cut_at_the_same_ends(tmp_path):
    # 500 events a message, all in one second: each flush's chunk is cut into several raw pieces.
    values = [b"\n".join(message(m * 500 + j, 7) for j in range(500)) for m in range(20)]
    now = [0.0]
    dedup = (tmp_path / "dedup", 3600)

    def read(step, size: int, first: int, count: int, restore: Restore):
        state, flushes = None, []
        for i in range(first, first + count, size):
            offsets = list(range(i, min(i + size, first + count)))
            batch = KafkaBatch(0, values[offsets[0] : offsets[-1] + 1], offsets, offsets[-1] + 1, restore)
            restore = None
            now[0] += 1.0  # a flush is due after every batch
            state, flush = step(state, batch)
            flushes.append(flush)
        now[0] += 1.0
        state, flush = step(state, KafkaBatch(0, [], [], first + count))  # the source's next (empty) poll
        flushes.append(flush)
        state.seen.close()
        return [f for f in flushes if f is not None]

    before = read(Aggregate(120, 1.0, clock=lambda: now[0], dedup=dedup), 3, 0, 12, Restore(None, {}))
    assert [f.next_offset for f in before] == [6, 9, 12]
    # Killed before any of them was committed: restart at offset 0, reading 5 messages at a time.
    after = read(Aggregate(120, 1.0, clock=lambda: now[0], dedup=dedup), 5, 0, 20, Restore(None, {}, offset=0))
    assert [f.next_offset for f in after] == [6, 9, 12, 20]
    for old, new in zip(before, after, strict=False):
        assert new.raw.chunks == old.raw.chunks  # the same rows, so raw storage overwrites them
    assert sum(len(f.raw) for f in after) == 20 * 500


def test_an_event_stamped_far_ahead_of_its_arrival_is_dead_lettered_and_so_is_its_copy_later(tmp_path):
    t0 = int(T0.timestamp())
    arrived_ms = (t0 + 10) * 1000
    step = Aggregate(120, 0.0, clock=lambda: 0.0, max_ahead_s=300, dedup=(tmp_path / "dedup", 3600))
    ahead = message(1, 10 + 301)  # 301 s after the message reached Kafka
    batch = KafkaBatch(0, [message(0, 10), ahead], [0, 1], 2, Restore(None, {}), arrivals=[arrived_ms] * 2)
    state, first = step(None, batch)
    assert [(p, reason) for p, _v, reason in first.invalid] == [
        (position(1, 0), "timestamp: more than 300 s ahead of its arrival in Kafka")
    ]
    assert first.watermark == t0 + 10 and [r.acc.count for r in first.rows] == [1]
    # The same event sent again later: on time by then, counted once (the first copy never got in).
    later = KafkaBatch(0, [ahead], [2], 3, arrivals=[(t0 + 600) * 1000])
    state, second = step(state, later)
    assert second.invalid == []
    counts = {r.bucket - t0: r.acc.count for f in (first, second) for r in f.rows if r.width == 60}
    assert counts == {0: 1, 300: 1}


def test_a_message_of_more_events_than_positions_can_number_is_dead_lettered_whole():
    huge = b"\n".join(message(i, 1) for i in range(1025))
    (flush,) = run([("0", KafkaBatch(0, [message(5000, 1), huge], [0, 1], 2, Restore(None, {})))], 1)
    assert [(p, v == huge) for p, v, _r in flush.invalid] == [(position(1, 0), True)]
    assert sum(r.acc.count for r in flush.rows if r.width == 60) == 1


def test_positions_a_store_refused_before_a_restart_are_dead_lettered_with_the_reason():
    values = [message(i, i) for i in range(4)]
    restore = Restore(None, {}, refused={position(2, 0): "postgres refused: check constraint"})
    (flush,) = run([("0", KafkaBatch(0, values, [0, 1, 2, 3], 4, restore))], 1)
    assert [(p, r) for p, _v, r in flush.invalid] == [(position(2, 0), "postgres refused: check constraint")]
    assert sum(r.acc.count for r in flush.rows if r.width == 60) == 3


@pytest.mark.parametrize("size", [1, 2, 3, 7])
def test_which_events_are_late_does_not_depend_on_how_batches_fell(size):
    # Messages whose event times jump ahead and back: judged per batch, an event behind a jump in
    # the same batch was on time, and late when the jump came in the batch before.
    rng = random.Random(11)
    values = [
        b"\n".join(message(m * 10 + j, rng.choice([0, 400, 700, 1035, 1400])) for j in range(3)) for m in range(12)
    ]

    def late_ids(batch_size: int) -> list[str]:
        step, state, out = Aggregate(300, 0.0, clock=lambda: 0.0), None, []
        for i in range(0, len(values), batch_size):
            offsets = list(range(i, min(i + batch_size, len(values))))
            batch = KafkaBatch(0, values[offsets[0] : offsets[-1] + 1], offsets, offsets[-1] + 1, Restore(None, {}))
            state, flush = step(state, batch)
            out += [e.event_id for e in flush.late]
        return out

    assert late_ids(size) == late_ids(len(values)) != []


def test_a_partition_draining_a_backlog_flushes_less_often_and_at_the_head_every_interval():
    now = [0.0]
    step = Aggregate(120, 1.0, clock=lambda: now[0], backlog=(100, 5.0), max_events=None)
    state, flushes = None, []
    # 1.5 s between batches: with 500 messages still to read, no flush until 5 s have passed.
    for i, lag in enumerate([500, 400, 300, 200, 100, 0, 0]):
        now[0] += 1.5
        batch = KafkaBatch(0, [message(i, i)], [i], i + 1, Restore(None, {}) if i == 0 else None, lag=lag)
        state, flush = step(state, batch)
        flushes.append(flush is not None)
    # The clock starts at the first batch (t = 1.5); at t = 7.5 (100 left) 6 s have passed: a
    # flush; at t = 9.0 and 10.5 the partition is at the head, where 1.5 s is past the interval.
    assert flushes == [False, False, False, False, True, True, True]


def test_a_partition_holding_max_events_flushes_before_its_interval():
    step = Aggregate(120, 60.0, clock=lambda: 0.0, max_events=3)
    state, flush = step(None, KafkaBatch(0, [message(0, 0), message(1, 1)], [0, 1], 2, Restore(None, {})))
    assert flush is None
    state, flush = step(state, KafkaBatch(0, [message(2, 2)], [2], 3))
    assert flush is not None and len(flush.raw) == 3 and flush.next_offset == 3


def test_while_a_backlog_drains_flushes_between_commits_carry_raw_events_only(tmp_path):
    now = [0.0]
    step = Aggregate(
        120, 1.0, clock=lambda: now[0], dedup=(tmp_path / "dedup", 3600), backlog=(100, 2.0), commit_interval=6.0
    )
    state, kinds, written = None, [], []
    # 2 s between batches: a flush at every batch but the first; 500..120 messages left, then none.
    lags = [500, 450, 400, 350, 300, 250, 200, 150, 120, 0, 0]
    for i, lag in enumerate(lags):
        now[0] += 2.0
        restore = Restore(None, {}, fresh=True, offset=0) if i == 0 else None
        state, flush = step(state, KafkaBatch(0, [message(i, 30 + i)], [i], i + 1, restore, lag=lag))
        kinds.append(None if flush is None else flush.commit)
        written.append(0 if flush is None else len(flush.raw))
        if flush is not None and not flush.commit:
            assert flush.rows == [] and flush.late == []
    # The first flush commits (nothing was ever committed), then one in three, 6 s apart, while
    # behind, and every flush at the head. Raw events go out with every flush.
    assert kinds == [None, True, False, False, True, False, False, True, False, True, True]
    assert written == [0, 2] + [1] * 9
    state.seen.close()


def test_a_commit_writes_each_cell_once_with_everything_the_flushes_before_it_took(tmp_path):
    now = [0.0]
    step = Aggregate(
        120, 1.0, clock=lambda: now[0], dedup=(tmp_path / "dedup", 3600), backlog=(100, 2.0), commit_interval=60.0
    )
    state, flushes = None, []
    for i in range(6):
        now[0] += 2.0
        restore = Restore(None, {}, fresh=True, offset=0) if i == 0 else None
        state, flush = step(state, KafkaBatch(0, [message(i, 10)], [i], i + 1, restore, lag=1000))
        flushes.append(None if flush is None else flush.commit)
    assert flushes == [None, True, False, False, False, False]
    # Caught up with nothing new to read: the next flush commits what the four before it took,
    # the cell once, with all six events.
    now[0] += 2.0
    state, flush = step(state, KafkaBatch(0, [], [], 6, lag=0))
    assert flush.commit and flush.partials == 4 and flush.next_offset == 6 and len(flush.raw) == 0
    assert [(r.bucket - int(T0.timestamp()), r.acc.count) for r in flush.rows] == [(0, 6)]
    now[0] += 2.0
    assert step(state, KafkaBatch(0, [], [], 6, lag=0))[1] is None  # nothing left to commit
    state.seen.close()


def test_up_to_the_offset_a_refused_commit_ended_at_every_flush_commits(tmp_path):
    now = [0.0]
    step = Aggregate(
        120, 1.0, clock=lambda: now[0], dedup=(tmp_path / "dedup", 3600), backlog=(100, 2.0), commit_interval=60.0
    )
    state, kinds = None, []
    for i in range(6):
        now[0] += 2.0
        restore = Restore(None, {}, offset=0, whole_until=4) if i == 0 else None
        state, flush = step(state, KafkaBatch(0, [message(i, 10)], [i], i + 1, restore, lag=1000))
        kinds.append(None if flush is None else flush.commit)
    assert kinds == [None, True, True, True, False, False]  # ending at 2, 3 and 4 they commit; at 5, 6 need not
    state.seen.close()
