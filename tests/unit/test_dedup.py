"""Exact dedup by event_id: later copies suppressed, a re-read after a crash not mistaken for one."""

from __future__ import annotations

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
