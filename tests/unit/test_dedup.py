"""Exact dedup by event_id: later copies suppressed, a re-read after a crash not mistaken for one."""

from __future__ import annotations

import random
import uuid

from tally import dedup, idfilter
from tally.dedup import SeenIds

H = 3600


def test_later_copies_are_suppressed_within_a_batch_and_across_commits(tmp_path):
    seen = SeenIds(tmp_path, H)
    assert seen.first_copies(["a", "b", "a"], [1, 2, 3]) == [True, True, False]
    seen.commit(10)
    assert seen.first_copies(["b", "c"], [4, 5]) == [False, True]


def test_ids_survive_a_restart_and_the_uncommitted_tail_is_read_again_as_first_copies(tmp_path):
    seen = SeenIds(tmp_path, H)
    seen.first_copies(["a", "b"], [1, 2])
    seen.commit(10)  # the flush counting a and b is committed after this
    seen.first_copies(["c", "a"], [3, 4])
    seen.commit(10)  # ids durable, but say the process dies before PostgreSQL commits the flush
    seen.close()

    again = SeenIds(tmp_path, H)  # restarts from the committed offset: positions 3 and 4 again
    assert again.first_copies(["c", "a"], [3, 4]) == [True, False]
    assert again.first_copies(["a", "b", "c", "d"], [5, 6, 7, 8]) == [False, False, False, True]


def test_ids_are_remembered_for_at_least_the_horizon_and_forgotten_after_two(tmp_path):
    seen = SeenIds(tmp_path, H)
    seen.first_copies(["old"], [1])
    seen.commit(10 * H + 5)
    seen.first_copies(["x"], [2])
    seen.commit(11 * H + 5)  # one generation later: still remembered
    assert seen.first_copies(["old"], [3]) == [False]
    seen.commit(12 * H + 5)  # the generation holding "old" is dropped
    assert seen.first_copies(["old", "x"], [4, 5]) == [True, False]
    seen.close()
    reopened = SeenIds(tmp_path, H)
    assert sorted(reopened.gens) == [11, 12]


def test_a_fresh_partition_forgets_ids_of_an_earlier_topic(tmp_path):
    seen = SeenIds(tmp_path, H)
    seen.first_copies(["a"], [1])
    seen.commit(10)
    seen.close()
    assert SeenIds(tmp_path, H, fresh=True).first_copies(["a"], [5]) == [True]


def test_the_in_memory_filters_change_no_answer(tmp_path):
    """The same stream of ids, copies, commits, generations and restarts through a store with
    filters and one without: every answer equal. Copies come from the batch, the uncommitted
    tail, the current and the previous generation."""
    rng = random.Random(7)
    stores = {"with": tmp_path / "with", "without": tmp_path / "without"}
    budgets = {"with": dedup.FILTER_BUDGET, "without": 0}
    seen = {name: SeenIds(path, H, filter_budget=budgets[name]) for name, path in stores.items()}
    earlier: list[str] = []
    pos, watermark = 0, 10
    for step in range(60):
        fresh = [f"id-{step}-{i}" for i in range(rng.randrange(1, 3000))]
        copies = rng.sample(earlier, min(len(earlier), rng.randrange(0, 50)))
        batch = fresh + copies + fresh[: rng.randrange(0, 5)]  # and copies inside the batch
        rng.shuffle(batch)
        positions = list(range(pos, pos + len(batch)))
        pos += len(batch)
        answers = {name: s.first_copies(batch, positions) for name, s in seen.items()}
        assert answers["with"] == answers["without"], step
        earlier += fresh
        if step % 3 == 2:
            watermark += H // 2  # a new generation every other commit
            for s in seen.values():
                s.commit(watermark, pos)
        if step % 20 == 19:  # a restart: filters of the generations on disk read in again
            for name in seen:
                seen[name].close()
                seen[name] = SeenIds(stores[name], H, filter_budget=budgets[name])
            assert set(seen["with"].filters) == set(seen["with"].gens)
    assert seen["with"].filters and not seen["without"].filters


def test_a_generation_without_a_filter_is_asked_of_rocksdb(tmp_path, monkeypatch):
    seen = SeenIds(tmp_path, H)
    seen.first_copies(["a", "b"], [1, 2])
    seen.commit(10)
    seen.close()
    monkeypatch.setattr(dedup, "LOAD_LIMIT", 1)  # too big to read in at start
    again = SeenIds(tmp_path, H)
    assert again.filters == {}
    assert again.first_copies(["a", "c"], [3, 4]) == [False, True]
    tiny = SeenIds(tmp_path / "tiny", H, filter_budget=1 << 13)  # one link of 8 KiB, no room to grow
    ids = [f"x{i}" for i in range(20_000)]
    assert tiny.first_copies(ids, list(range(20_000))) == [True] * 20_000
    tiny.commit(10)
    assert tiny.filters == {}  # past its budget: dropped, not kept incomplete
    assert tiny.first_copies(["x5", "y"], [20_001, 20_002]) == [False, True]


def test_the_id_filter_never_forgets_an_id_and_rarely_claims_one():
    ids = idfilter.IdFilter(64 << 20)
    added = [uuid.uuid4().bytes for _ in range(300_000)]
    for start in range(0, len(added), 70_000):
        assert ids.add(idfilter.hashes(added[start : start + 70_000]))
    assert ids.may_contain(idfilter.hashes(added)).all()
    others = idfilter.hashes([uuid.uuid4().bytes for _ in range(300_000)])
    assert ids.may_contain(others).mean() < 0.02
    small = idfilter.IdFilter(1 << 20)  # room for ~800 K ids: a second link does not fit
    assert small.add(idfilter.hashes(added[:200_000])) and not small.add(idfilter.hashes(added * 3))
