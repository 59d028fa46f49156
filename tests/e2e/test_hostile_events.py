"""Events generated to be hostile (any Unicode, huge and tiny numbers, odd offsets, times from 1960
to the future) go through the real stack beside ordinary traffic on every partition. Each one the
API accepts ends in exactly one place, a rollup, the late ledger or the dead-letter topic with a
reason, and the ordinary traffic is counted exactly."""

from __future__ import annotations

import json
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta, timezone

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tally.producer import partition_of
from tally.storage import rollup_store
from tests.e2e.conftest import iso, minute_cells, recent_window, wait_for
from tests.topics import read_topic

NOW = datetime.now(UTC)
# Any code point (surrogates and controls too), or any the stores can hold: emoji, RTL, zero-width...
text = st.one_of(
    st.text(st.characters(codec=None, exclude_categories=()), max_size=80),
    st.text(st.characters(exclude_categories=("Cc", "Cs")), min_size=1, max_size=64),
)
numbers = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from([0.0, -0.0, 5e-324, 1.7976931348623157e308, -1.7976931348623157e308, 2.0**53 + 1]),
    st.integers(-(2**63), 2**63 - 1),
)
offsets = st.builds(lambda m: timezone(timedelta(minutes=m)), st.integers(-23 * 60 - 59, 23 * 60 + 59))
# Mostly the last two minutes (counted), else anything from 1960 to ten minutes ahead (late or refused).
times = st.builds(
    lambda t, tz: t.replace(tzinfo=UTC).astimezone(tz).isoformat(),
    st.one_of(
        st.datetimes(NOW.replace(tzinfo=None) - timedelta(minutes=2), NOW.replace(tzinfo=None)),
        st.datetimes(datetime(1960, 1, 1), NOW.replace(tzinfo=None) + timedelta(minutes=10)),
    ),
    offsets,
)


@st.composite
def hostile(draw, run: str, n: int) -> tuple[str, str]:
    """(event_type, one NDJSON line): an event with hostile content, its type its own."""
    event_type = f"{run}.h{n}"
    event = {
        "event_id": f"{run}-{n}-{draw(text)}",
        "event_type": event_type,
        "timestamp": draw(times),
        "source": draw(st.one_of(text, st.just("web"))),
        "user_id": draw(st.one_of(st.none(), text)),
        "value": draw(st.one_of(st.none(), numbers)),
        "attributes": draw(st.one_of(st.none(), st.dictionaries(text, st.one_of(text, numbers, st.booleans())))),
    }
    event = {k: v for k, v in event.items() if v is not None}
    line = json.dumps(event, ensure_ascii=draw(st.booleans())).encode("utf-8", "surrogatepass")
    return event_type, line


def test_each_accepted_hostile_event_is_counted_ledgered_or_dead_lettered_once(api, stack):
    run = f"h{uuid.uuid4().hex[:8]}"
    start, end = recent_window()
    ordinary_sent: Counter = Counter()
    accepted: dict[str, str] = {}  # event_type -> its event_id prefix
    refused = Counter()
    counter = iter(range(10**9))

    @settings(max_examples=60, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(st.data())
    def send(data):
        hostiles = [data.draw(hostile(run, next(counter))) for _ in range(data.draw(st.integers(1, 8)))]
        # Ordinary events in every partition, in the same body.
        ordinary, i = [], 0
        while len({partition_of(e["event_id"], stack.kafka_partitions) for e in ordinary}) < stack.kafka_partitions:
            ordinary.append({"event_id": f"{run}-o{next(counter)}", "event_type": f"{run}.ok", "timestamp": iso(start)})
            i += 1
        lines = [line for _t, line in hostiles] + [json.dumps(e).encode() for e in ordinary]
        r = api.post("/api/events", content=b"\n".join(lines), headers={"Content-Type": "application/x-ndjson"})
        assert r.status_code == 202, r.text  # the ordinary events at least are valid
        bad = {e["index"] for e in r.json()["errors"]}
        for e in r.json()["errors"]:
            assert e["field"] or e["message"]  # every refusal says why
            refused[e["field"]] += 1
        for j, (event_type, _line) in enumerate(hostiles):
            if j not in bad:
                accepted[event_type] = f"{run}-{event_type.rsplit('.h', 1)[1]}-"
        ordinary_sent[(iso(start)[:16], f"{run}.ok", "unknown")] += len(ordinary)

    send()
    assert accepted and sum(refused.values()) > 0  # the strategy reaches both sides

    params = [("from", iso(start)), ("to", iso(end)), ("granularity", "1m"), ("metrics", "count")]
    params += [("group_by", "event_type,source"), ("event_type", f"{run}.ok")]
    wait_for(lambda: minute_cells(api.get("/api/aggregate", params=params).json()) == ordinary_sent, 60, "ordinary")

    def places() -> Counter:
        """How many places (rollups, late ledger, dead letters) each accepted event is in."""
        found: Counter = Counter()
        with rollup_store.connect(stack) as conn:
            for table in ("rollup_1m", "late_events"):
                count = "sum(event_count)" if table == "rollup_1m" else "count(*)"
                rows = conn.execute(
                    f"select event_type, {count} from {table} where event_type like %s group by 1", (f"{run}.h%",)
                ).fetchall()
                found.update({t: int(n) for t, n in rows})
        return found

    def dead_letters() -> dict[str, str]:
        letters = read_topic(stack, stack.dlq_topic, lambda ms: False, timeout_s=3)
        out = {}
        for m in letters:
            if run.encode() in m.value():
                for event_type, prefix in accepted.items():
                    if prefix.encode() in m.value() and event_type.encode() in m.value():
                        out[event_type] = dict(m.headers())["reason"].decode()
        return out

    def settled() -> bool:
        found, letters = places(), dead_letters()
        return all(found[t] + (t in letters) == 1 for t in accepted)

    wait_for(settled, 90, "every accepted hostile event in exactly one place")
    letters = dead_letters()
    assert all(letters.values())
    with rollup_store.connect(stack) as conn:
        ledgered = conn.execute("select count(*) from late_events where event_type like %s", (f"{run}.h%",)).fetchone()
    print(
        f"\nhostile events: {len(accepted) + sum(refused.values())} sent, {len(accepted)} accepted"
        f" ({len(accepted) - ledgered[0] - len(letters)} counted, {ledgered[0]} late-ledgered,"
        f" {len(letters)} dead-lettered), refused by field: {dict(refused)}"
    )
    assert api.get("/healthz").status_code == 200
