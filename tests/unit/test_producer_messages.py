from tally.flush import LINE_BITS
from tally.producer import MAX_EVENTS_PER_MESSAGE, MAX_MESSAGE_BYTES, group_messages, partition_of


def test_every_copy_of_an_event_id_goes_to_the_same_partition():
    assert {partition_of("order-42", 4) for _ in range(10)} == {partition_of("order-42", 4)}
    spread = [partition_of(f"e{i}", 4) for i in range(10_000)]
    assert all(2200 < spread.count(p) < 2800 for p in range(4))  # roughly even


def test_messages_hold_each_event_once_in_its_partition_and_stay_small():
    values = [f'{{"n":{i}}}'.encode() for i in range(5000)] + [b"x" * 100_000] * 12
    ids = [f"e{i}" for i in range(len(values))]
    messages = group_messages(values, ids, 4)
    seen = []
    for p, msg in messages:
        lines = msg.split(b"\n")
        assert len(lines) <= MAX_EVENTS_PER_MESSAGE < 2**LINE_BITS
        assert len(msg) <= MAX_MESSAGE_BYTES + 100_000
        seen += [(p, line) for line in lines]
    assert sorted(line for _p, line in seen) == sorted(values)
    assert all(p == partition_of(ids[values.index(line)], 4) for p, line in seen[:200])
