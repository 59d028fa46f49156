"""Known events sent every way the API takes them come out exactly in /api/aggregate."""

from __future__ import annotations

import gzip
import json
import random
from collections import defaultdict
from datetime import datetime, timedelta

import pytest

from tally.sketch import STANDARD_ERROR
from tests.e2e.conftest import iso, recent_window, wait_for


def make_events(run_id: str, window, n: int, seed: int, users: int = 50) -> list[dict]:
    rng = random.Random(seed)
    start, _end = window
    out = []
    for i in range(n):
        e = {
            "event_id": f"{run_id}-{seed}-{i}",
            "event_type": f"{run_id}.{rng.choice(['click', 'view'])}",
            "timestamp": iso(start + timedelta(seconds=rng.uniform(0, 119.999))),
            "source": rng.choice(["web", "ios", "android"]),
            "user_id": f"user-{rng.randrange(users)}",
        }
        if rng.random() < 0.8:
            e["value"] = round(rng.uniform(-100, 100), 3)
        out.append(e)
    return out


def expected(events: list[dict], group_by: tuple[str, ...]) -> dict:
    cells: dict = defaultdict(lambda: {"count": 0, "values": []})
    for e in events:
        minute = e["timestamp"][:17] + "00Z"
        key = (tuple(e[g] for g in group_by), minute)
        cells[key]["count"] += 1
        if "value" in e:
            cells[key]["values"].append(e["value"])
    return cells


def fetch(api, run_id, window, group_by, metrics="count,sum,min,max,avg", types=("click", "view"), layout="rows"):
    start, end = window
    params = [("from", iso(start)), ("to", iso(end + timedelta(minutes=1))), ("granularity", "1m")]
    params += [("event_type", f"{run_id}.{t}") for t in types]
    params += [("metrics", metrics), ("group_by", ",".join(group_by)), ("format", layout)]
    r = api.get("/api/aggregate", params=params)
    assert r.status_code == 200, r.text
    return r.json()


def total_count(body) -> int:
    return sum(p["count"] for s in body["series"] for p in s["points"])


def send_every_way(api, events: list[dict]) -> int:
    """One object, an array, NDJSON, gzip'd NDJSON: every contract shape of the body."""
    q = len(events) // 4
    parts = [events[:1], events[1:q], events[q : 2 * q], events[2 * q :]]
    accepted = 0
    r = api.post("/api/events", json=parts[0][0])
    accepted += r.json()["accepted"]
    r = api.post("/api/events", json=parts[1])
    accepted += r.json()["accepted"]
    nd = "\n".join(json.dumps(e) for e in parts[2]).encode()
    r = api.post("/api/events", content=nd, headers={"Content-Type": "application/x-ndjson"})
    accepted += r.json()["accepted"]
    gz = gzip.compress("\n".join(json.dumps(e) for e in parts[3]).encode())
    r = api.post(
        "/api/events", content=gz, headers={"Content-Type": "application/x-ndjson", "Content-Encoding": "gzip"}
    )
    assert r.status_code == 202, r.text
    accepted += r.json()["accepted"]
    return accepted


def test_exact_count_sum_min_max_avg_per_minute_and_group(api, run_id):
    window = recent_window()
    events = make_events(run_id, window, 3000, seed=1)
    assert send_every_way(api, events) == len(events)
    wait_for(lambda: total_count(fetch(api, run_id, window, ())) == len(events), what="all events to be counted")

    for group_by in ((), ("event_type",), ("event_type", "source")):
        body = fetch(api, run_id, window, group_by)
        truth = expected(events, group_by)
        got = {}
        for s in body["series"]:
            for p in s["points"]:
                got[(tuple(s["group"][g] for g in group_by), p["t"])] = p
        assert set(got) == set(truth), group_by
        for key, cell in truth.items():
            p, vals = got[key], cell["values"]
            assert p["count"] == cell["count"], key
            assert p["sum"] == (None if not vals else pytest.approx(sum(vals), abs=1e-6)), key
            assert p["min"] == (min(vals) if vals else None) and p["max"] == (max(vals) if vals else None), key
            if vals:
                assert abs(p["avg"] - sum(vals) / len(vals)) < 1e-9
        # series sorted by group, points by time; buckets with nothing are absent
        groups = [tuple(s["group"].values()) for s in body["series"]]
        assert groups == sorted(groups)
        for s in body["series"]:
            assert [p["t"] for p in s["points"]] == sorted(p["t"] for p in s["points"])
    assert body["as_of"] is not None and body["granularity"] == "1m"
    # Minutes this recent are within the allowed lateness: they can still change.
    assert body["watermark"] is not None  # idle partitions too: their watermarks follow the clock
    assert all(p["final"] is False for s in body["series"] for p in s["points"])

    # The same answer in columns: the same figures, transposed, and none final yet.
    columns = fetch(api, run_id, window, ("event_type", "source"), layout="columns")
    assert [s["group"] for s in columns["series"]] == [s["group"] for s in body["series"]]
    for rows, cols in zip(body["series"], columns["series"], strict=True):
        assert cols["t"] == [int(datetime.fromisoformat(p["t"]).timestamp()) for p in rows["points"]]
        for m in ("count", "sum", "min", "max", "avg"):
            assert cols[m] == [p[m] for p in rows["points"]], m
        assert cols["final"] == 0

    # Compressed the way the client accepts, the same answer in fewer bytes.
    start, end = window
    params = {"from": iso(start), "to": iso(end + timedelta(minutes=1)), "event_type": f"{run_id}.click"}
    params |= {"granularity": "1m", "metrics": "count,sum,min,max,avg", "group_by": "source", "format": "columns"}
    plain = api.get("/api/aggregate", params=params, headers={"Accept-Encoding": "identity"})
    assert "content-encoding" not in plain.headers and len(plain.content) > 500
    for encoding in ("zstd", "br", "gzip"):
        r = api.get("/api/aggregate", params=params, headers={"Accept-Encoding": f"{encoding}, identity;q=0.5"})
        assert r.headers["content-encoding"] == encoding
        assert r.json()["series"] == plain.json()["series"] and r.num_bytes_downloaded < len(plain.content)


def test_unique_users_within_the_sketch_error_and_merged_not_summed(api, run_id):
    window = recent_window()
    events = make_events(run_id, window, 6000, seed=2, users=2500)
    for i in range(0, len(events), 1000):
        assert api.post("/api/events", json=events[i : i + 1000]).status_code == 202
    wait_for(lambda: total_count(fetch(api, run_id, window, ())) == len(events), what="all events to be counted")
    start, end = window
    r = api.get(
        "/api/aggregate",
        params=[
            ("from", iso(start)),
            ("to", iso(end + timedelta(minutes=1))),
            ("granularity", "1h"),
            ("event_type", f"{run_id}.click"),
            ("event_type", f"{run_id}.view"),
            ("metrics", "unique_users,count"),
        ],
    )
    points = [p for s in r.json()["series"] for p in s["points"]]
    distinct = len({e["user_id"] for e in events})
    # The window may straddle an hour boundary; then each hour has its own (exact) count.
    for p in points:
        in_hour = {e["user_id"] for e in events if e["timestamp"][:13] == p["t"][:13]}
        assert abs(p["unique_users"] - len(in_hour)) <= 3 * STANDARD_ERROR * len(in_hour), (p, len(in_hour))
    assert sum(p["count"] for p in points) == len(events)
    assert distinct > 2000
