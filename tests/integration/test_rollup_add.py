"""Adding to closed rows (backfills, the correction step) from two transactions at once: neither
addition is lost, also for a row that did not exist before either began."""

from __future__ import annotations

import threading
import time
import uuid
from datetime import UTC, datetime

from tally.cells import Acc, RollupRow
from tally.storage import rollup_store

MINUTE = int(datetime(2026, 5, 8, 9, 30, tzinfo=UTC).timestamp())


def _acc(count: int, value: float) -> Acc:
    acc = Acc()
    for i in range(count):
        acc.add(value, f"u{i}")
    return acc


def test_two_writers_adding_to_the_same_new_row_both_count(stack):
    event_type = f"add.{uuid.uuid4().hex[:8]}"
    first = rollup_store.connect(stack)
    second = rollup_store.connect(stack)
    done = threading.Event()

    def add_second() -> None:
        with second.transaction():
            rollup_store.add_rows(second, [RollupRow(MINUTE, event_type, "web", 0, _acc(5, 2.0), True)])
        done.set()

    try:
        with first.transaction():
            rollup_store.add_rows(first, [RollupRow(MINUTE, event_type, "web", 0, _acc(3, 1.0), True)])
            writer = threading.Thread(target=add_second)
            writer.start()
            time.sleep(1.0)
            assert not done.is_set()  # it waits for the first to commit, to add to what it wrote
        writer.join(30)
        assert done.is_set()
        with rollup_store.connect(stack) as conn:
            row = conn.execute(
                "select event_count, value_count, value_sum, value_min, value_max from rollup_1m where event_type = %s",
                (event_type,),
            ).fetchall()
        assert row == [(8, 8, 13.0, 1.0, 2.0)]
    finally:
        first.close()
        second.close()
