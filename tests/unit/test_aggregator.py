"""The aggregation logic alone, without Bytewax: exact per-minute results, lateness, merging."""

import random
from collections import defaultdict
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tally.aggregator import PartitionAggregator
from tally.cells import BUCKET_S, Acc, bucket_of
from tally.events.schema import Event

T0 = datetime(2026, 11, 26, 10, 0, tzinfo=UTC)


def ev(i: int, seconds: float, event_type="click", source="web", value=None, user=None) -> Event:
    return Event(f"e{i}", event_type, T0 + timedelta(seconds=seconds), source, user, value)


def truth(events):
    cells = defaultdict(lambda: {"count": 0, "sum": 0.0, "vals": []})
    for e in events:
        c = cells[(bucket_of(e.timestamp.timestamp()), e.event_type, e.source)]
        c["count"] += 1
        if e.value is not None:
            c["sum"] += e.value
            c["vals"].append(e.value)
    return {
        k: (v["count"], v["sum"], min(v["vals"], default=None), max(v["vals"], default=None)) for k, v in cells.items()
    }


def final_rows(flushes, width=60):
    latest = {}
    for f in flushes:
        for r in f.rows:
            if r.width == width:
                latest[(r.bucket, r.event_type, r.source)] = r
    return {k: (r.acc.count, r.acc.value_sum, r.acc.value_min, r.acc.value_max) for k, r in latest.items()}


def test_rows_equal_the_ground_truth_per_minute_type_and_source():
    rng = random.Random(7)
    events = [
        ev(
            i,
            rng.uniform(0, 180),
            rng.choice(["click", "view"]),
            rng.choice(["web", "ios"]),
            rng.choice([None, 1.5, -2, 10]),
        )
        for i in range(2000)
    ]
    agg = PartitionAggregator(0, allowed_lateness_s=300)
    flushes = []
    for i in range(0, len(events), 137):
        agg.add(events[i : i + 137])
        flushes.append(agg.flush(i))
    assert final_rows(flushes) == {k: v for k, v in truth(events).items()}
    assert not any(f.late for f in flushes)
    # The hour rows are exactly the sums of their minute rows.
    minutes = final_rows(flushes)
    for (hour, et, src), (count, total, lo, hi) in final_rows(flushes, 3600).items():
        mine = [v for (b, e, s), v in minutes.items() if (e, s) == (et, src) and hour <= b < hour + 3600]
        assert count == sum(m[0] for m in mine) and total == pytest.approx(sum(m[1] for m in mine))
        assert lo == min((m[2] for m in mine if m[2] is not None), default=None)
        assert hi == max((m[3] for m in mine if m[3] is not None), default=None)


def test_an_event_behind_the_watermark_by_more_than_the_lateness_is_late_and_not_counted():
    agg = PartitionAggregator(0, allowed_lateness_s=60)
    agg.add([ev(1, 0), ev(2, 400)])  # watermark now T0+400 s
    agg.add([ev(3, 30), ev(4, 350)])  # minute 0 ended at 60 s: 60 + 60 <= 400, so late; 350 s is in bound
    flush = agg.flush(4)
    assert [e.event_id for e in flush.late] == ["e3"]
    rows = {r.bucket - bucket_of(T0.timestamp()): r for r in flush.rows if r.width == 60}
    assert rows[0].acc.count == 1 and rows[0].final  # closed, written once more as final, then evicted
    assert rows[300].acc.count == 1 and not rows[300].final  # e4: its minute ends at 360 s, + 60 s > 400 s
    assert rows[360].acc.count == 1 and not rows[360].final
    assert all(k[0] != bucket_of(T0.timestamp()) for k in agg.open)


def test_a_backlog_replayed_after_a_stall_marks_nothing_late():
    # The watermark follows event time, not the wall clock: replaying an hour-old backlog in order
    # must not make its own events late, however long the dataflow was stopped.
    agg = PartitionAggregator(0, allowed_lateness_s=300)
    events = [ev(i, i * 0.5) for i in range(7200)]  # one hour, in order, shuffled within 4 minutes
    rng = random.Random(3)
    for i in range(0, len(events), 480):
        chunk = events[i : i + 480]
        rng.shuffle(chunk)
        agg.add(chunk)
    assert agg.flush(0).late == []


def restored(flushes, partition: int = 0, lateness: int = 300) -> PartitionAggregator:
    """What rollups.load_partition gives back after these flushes were committed: the open minutes,
    and each open hour as its final minutes merged in minute order."""
    rows = {}
    for f in flushes:
        for r in f.rows:
            if r.width == 60:
                rows[(r.bucket, r.event_type, r.source)] = r
    agg = PartitionAggregator(partition, lateness, flushes[-1].watermark)
    hours_written = {(r.bucket, r.event_type, r.source) for f in flushes for r in f.rows if r.width == 3600}
    for key in sorted(rows):
        r = rows[key]
        copy = _copy(r.acc)
        if not r.final:
            agg.restore(key, copy)
            continue
        hour_key = (key[0] - key[0] % 3600, key[1], key[2])
        if hour_key not in hours_written:
            agg.hours.setdefault(hour_key, Acc()).merge(copy)
    return agg


def _copy(acc: Acc) -> Acc:
    out = Acc()
    out.merge(acc)
    return out


def test_restored_cells_continue_where_the_committed_state_left_off():
    first = PartitionAggregator(0, allowed_lateness_s=300)
    first.add([ev(i, i) for i in range(30)])
    committed = first.flush(30)
    assert [r.width for r in committed.rows] == [60]  # an open hour has no row yet
    second = restored([committed])
    second.add([ev(i, i) for i in range(30, 50)])
    (minute,) = second.flush(50).rows
    assert minute.acc.count == 50
    second.add([ev(99, 3 * 3600)])  # the watermark moves past the hour and its lateness
    closed = {(r.width, r.bucket): r for r in second.flush(51).rows}
    assert closed[(3600, bucket_of(T0.timestamp()))].acc.count == 50
    assert closed[(3600, bucket_of(T0.timestamp()))].final and closed[(60, bucket_of(T0.timestamp()))].final


sums = st.lists(
    st.tuples(
        st.floats(0, 2 * 3600 - 1),
        st.one_of(st.floats(-1e300, 1e300), st.floats(-1, 1), st.sampled_from([0.1, 0.2, 0.3, 1e16, -1e16])),
    ),
    min_size=1,
    max_size=300,
)


@settings(max_examples=60, deadline=None)
@given(sums, st.lists(st.integers(1, 60), min_size=1, max_size=8), st.integers(0, 299))
def test_float_sums_are_the_same_bits_however_batches_and_restarts_fall(items, cuts, crash_at):
    # The same events in the same stream order: one batch and no restart, or any batch sizes with
    # a restart from the committed rows half way. Every minute and hour row must be bit-identical.
    events = sorted((ev(i, t, value=v) for i, (t, v) in enumerate(items)), key=lambda e: e.timestamp)
    events.append(ev(10_000, 5 * 3600))  # closes every minute and hour
    one = PartitionAggregator(0, 120)
    one.add(events)
    want = {(r.width, r.bucket): r.acc.value_sum for r in one.flush(len(events)).rows}

    got, flushes, i, agg = {}, [], 0, PartitionAggregator(0, 120)
    crash_at = min(crash_at, len(events) - 1)
    for n in cuts * len(events):
        if i >= len(events):
            break
        if i <= crash_at < i + n and flushes:
            agg = restored(flushes, lateness=120)  # killed: what was committed comes back
        agg.add(events[i : i + n])
        i += n
        flushes.append(agg.flush(i))
        got.update({(r.width, r.bucket): r.acc.value_sum for r in flushes[-1].rows})
    assert {k: v for k, v in got.items() if k in want} == want
    assert got.keys() == want.keys()


def test_an_hour_row_is_written_once_when_the_hour_closes():
    agg = PartitionAggregator(0, allowed_lateness_s=60)
    flushes = []
    for m in range(0, 60, 10):
        agg.add([ev(m, m * 60)])
        flushes.append(agg.flush(m))
    assert all(r.width == 60 for f in flushes for r in f.rows)
    agg.add([ev(100, 3600 + 120)])
    hours = [r for r in agg.flush(100).rows if r.width == 3600]
    assert [(r.acc.count, r.final) for r in hours] == [(6, True)] and not agg.hours.keys() - {
        (bucket_of(T0.timestamp()) + 3600, "click", "web")
    }


batches = st.lists(
    st.tuples(
        st.integers(0, 3 * BUCKET_S - 1), st.sampled_from(["a", "b"]), st.one_of(st.none(), st.floats(-1e6, 1e6))
    ),
    min_size=1,
    max_size=200,
)


@settings(max_examples=80, deadline=None)
@given(batches, st.randoms(use_true_random=False), st.integers(1, 50))
def test_any_split_and_order_of_a_batch_gives_the_same_rollup(items, rnd, chunk):
    events = [ev(i, s, t, value=v, user=f"u{i % 13}") for i, (s, t, v) in enumerate(items)]
    one = PartitionAggregator(0, 3600)
    one.add(events)
    whole = {(r.width, r.bucket, r.event_type): r.acc for r in one.flush(0).rows}
    shuffled = events[:]
    rnd.shuffle(shuffled)
    many = PartitionAggregator(0, 3600)
    for i in range(0, len(shuffled), chunk):
        many.add(shuffled[i : i + chunk])
    parts = {(r.width, r.bucket, r.event_type): r.acc for r in many.flush(0).rows}
    assert whole.keys() == parts.keys()
    for k, a in whole.items():
        b = parts[k]
        assert (a.count, a.value_count, a.value_min, a.value_max) == (b.count, b.value_count, b.value_min, b.value_max)
        assert abs(a.value_sum - b.value_sum) <= 1e-6 * max(1.0, abs(a.value_sum))
        assert a.users.to_bytes() == b.users.to_bytes()


@settings(max_examples=50, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 100), st.one_of(st.none(), st.integers(-50, 50))), max_size=60),
    st.integers(0, 60),
)
def test_merging_accumulators_equals_accumulating_everything(items, cut):
    whole, left, right = Acc(), Acc(), Acc()
    for i, (u, v) in enumerate(items):
        value = None if v is None else float(v)
        whole.add(value, f"u{u}")
        (left if i < cut else right).add(value, f"u{u}")
    left.merge(right)
    assert (left.count, left.value_count, left.value_sum, left.value_min, left.value_max) == (
        whole.count,
        whole.value_count,
        whole.value_sum,
        whole.value_min,
        whole.value_max,
    )
    assert left.users.to_bytes() == whole.users.to_bytes()


cells_of_many_users = st.lists(
    st.tuples(
        st.integers(0, 3 * BUCKET_S - 1),
        st.sampled_from(["a", "b", "c"]),
        st.one_of(st.none(), st.floats(-1e12, 1e12)),
        st.one_of(st.none(), st.integers(0, 400)),  # over 160 users in a cell: registers, not a set
    ),
    min_size=1,
    max_size=600,
)


@settings(max_examples=60, deadline=None)
@given(cells_of_many_users, st.lists(st.integers(1, 90), min_size=1, max_size=6), st.integers(0, 3))
def test_cells_are_the_same_to_the_bit_whenever_the_taken_events_are_folded(items, cuts, every):
    # A batch only notes each event's cell; the fold into counts, sums and sketches comes later
    # (tally.cell_log), at a flush or when the log is full. Folding after every batch, every few
    # batches or only at the flush must give identical cells: sums to the bit, sketches byte for byte.
    events = [ev(i, s, t, value=v, user=None if u is None else f"u{u}") for i, (s, t, v, u) in enumerate(items)]
    folded_once = PartitionAggregator(0, 3600)
    folded_often = PartitionAggregator(0, 3600)
    i = 0
    for batch, n in enumerate(cuts * len(events), 1):
        if i >= len(events):
            break
        folded_once.add(events[i : i + n])
        folded_often.add(events[i : i + n])
        if every and batch % every == 0:
            folded_often.settle()
        i += n
    once, often = (
        {(r.width, r.bucket, r.event_type): r.acc for r in agg.flush(0).rows} for agg in (folded_once, folded_often)
    )
    assert once.keys() == often.keys() == {(60, bucket_of(e.timestamp.timestamp()), e.event_type) for e in events}
    for k, a in once.items():
        b = often[k]
        assert (a.count, a.value_count, a.value_min, a.value_max) == (b.count, b.value_count, b.value_min, b.value_max)
        assert a.value_sum.hex() == b.value_sum.hex()
        assert a.users.to_bytes() == b.users.to_bytes()
    want = truth(events)
    assert {k[1:]: (a.count, a.value_min, a.value_max) for k, a in once.items()} == {
        (b, t): (c, lo, hi) for (b, t, _s), (c, _sum, lo, hi) in want.items()
    }
    for (b, t, _s), (_c, total, _lo, _hi) in want.items():  # one event at a time, in stream order
        assert once[(60, b, t)].value_sum.hex() == float(total).hex()


def test_a_full_log_is_folded_while_taking_events(monkeypatch):
    # The log holds at most MAX_EVENTS events: beyond, add folds them, so memory stays bounded
    # between commits however long a backlog's commit interval is.
    from tally import cell_log

    monkeypatch.setattr(cell_log, "MAX_EVENTS", 10)
    agg = PartitionAggregator(0, 3600)
    agg.add([ev(i, i, value=1.0, user=f"u{i}") for i in range(25)])
    assert agg.open and all(acc.count for acc in agg.open.values())  # folded without a flush
    agg.add([ev(100 + i, 30 + i) for i in range(3)])  # below the bound: noted, not folded yet
    assert sum(acc.count for acc in agg.open.values()) == 25
    assert sum(r.acc.count for r in agg.flush(0).rows) == 28
