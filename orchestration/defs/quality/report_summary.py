"""What the daily quality report says about a day, as one JSON-ready dict: it is written as
summary.json and the page (report_page.py) is rendered from it alone.

Each part reads one place: events and late events per hour from PostgreSQL (rollup_1m, and the
late ledger's folded_at and duplicate columns), the reconciliation of every closed hour
(tally.storage.reconcile: Cassandra against the rollups), the suites' outcomes, and the latest
result of each check on the stream's assets as the Dagster instance recorded it. A part whose
store cannot be read says why (`error`) instead of stopping the others.
"""

from collections import defaultdict
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta

import dagster as dg

from expectations import SuiteOutcome
from tally.settings import Settings
from tally.storage import reconcile, rollup_store

HOUR = timedelta(hours=1)
MISMATCHES_SHOWN = 100

_PER_HOUR = """
with hours as (
    select generate_series(%(start)s::timestamptz, %(end)s::timestamptz - interval '1 hour', interval '1 hour') as hour
), counted as (
    select date_bin('1 hour', bucket, timestamptz '1970-01-01Z') as hour, sum(event_count)::bigint as events
    from rollup_1m where bucket >= %(start)s and bucket < %(end)s group by 1
), late as (
    select date_bin('1 hour', bucket, timestamptz '1970-01-01Z') as hour, count(*) as late,
           count(*) filter (where folded_at is null) as pending,
           count(*) filter (where folded_at is not null and not duplicate) as added,
           count(*) filter (where duplicate) as duplicates
    from late_events where bucket >= %(start)s and bucket < %(end)s group by 1
)
select hour, coalesce(events, 0), coalesce(late, 0), coalesce(pending, 0), coalesce(added, 0), coalesce(duplicates, 0)
from hours left join counted using (hour) left join late using (hour)
order by hour
"""
HOUR_FIELDS = ("events", "late", "late_pending", "late_added", "duplicates")


def per_hour(settings: Settings, start: datetime, end: datetime) -> list[dict]:
    """Each hour of [start, end): events counted in the rollups (late events once folded in), and
    the late ledger: late events, still pending, added by the correction, found to be copies."""
    with rollup_store.connect(settings, connect_timeout=5) as conn:
        rows = conn.execute(_PER_HOUR, {"start": start, "end": end}).fetchall()
    return [{"hour": _iso(r[0]), **dict(zip(HOUR_FIELDS, map(int, r[1:]), strict=True))} for r in rows]


def reconciliation(settings: Settings, start: datetime, end: datetime) -> dict:
    """Every closed hour of [start, end) reconciled (raw events in Cassandra = events in the
    rollups + late events pending); hours the stream has not closed yet are left out."""
    closed = reconcile.closed_until(settings)
    upto = start if closed is None else max(start, min(end, closed.replace(minute=0, second=0, microsecond=0)))
    mismatches = reconcile.reconcile(settings, start, upto) if upto > start else []
    by_hour: dict[datetime, list] = defaultdict(list)
    for m in mismatches:
        by_hour[m.hour].append(m)
    hours = []
    for hour in _hours(start, end):
        cells = by_hour.get(hour, [])
        hours.append(
            {
                "hour": _iso(hour),
                "closed": hour < upto,
                "mismatched_cells": len(cells) if hour < upto else None,
                "difference": sum(m.difference for m in cells),
            }
        )
    return {
        "closed_until": None if closed is None else _iso(closed),
        "hours_checked": sum(h["closed"] for h in hours),
        "mismatched_cells": len(mismatches),
        "hours": hours,
        "mismatches": [_mismatch(m) for m in mismatches[:MISMATCHES_SHOWN]],
    }


def suite(outcome: SuiteOutcome, page: str | None) -> dict:
    """A suite's outcome for the report: what broke, how badly, with a few examples."""
    return {
        "suite": outcome.suite,
        "success": outcome.success,
        "severity": outcome.severity,
        "statistics": outcome.statistics,
        "checked": outcome.details,
        "failed": [
            {
                "description": e.description,
                "severity": e.severity,
                "unexpected_count": e.unexpected_count,
                "sentence": e.sentence,
                "examples": e.unexpected_values[:3],
            }
            for e in outcome.failed
        ],
        "data_docs": page,
    }


def latest_checks(instance: dg.DagsterInstance, keys: Iterable[dg.AssetCheckKey]) -> list[dict]:
    """The latest recorded result of each check, as the Dagster UI shows it."""
    out = []
    for key in keys:
        record = instance.get_latest_asset_check_evaluation_record(key)
        evaluation = record.event.asset_check_evaluation if record and record.event else None
        row = {"asset": key.asset_key.to_user_string(), "check": key.name, "status": "not run yet"}
        if record is not None and evaluation is None:
            row |= {"status": "did not finish", "at": _iso(datetime.fromtimestamp(record.create_timestamp, UTC))}
        elif evaluation is not None:
            row |= {
                "status": "passed" if evaluation.passed else "failed",
                "severity": evaluation.severity.value,
                "at": _iso(datetime.fromtimestamp(record.event.timestamp, UTC)),
                "description": evaluation.description,
            }
        out.append(row)
    return out


def part(read: Callable[[], object], log) -> tuple[object, str | None]:
    """One part of the report, or the reason it could not be read (a store down, mostly)."""
    try:
        return read(), None
    except Exception as e:  # the report is still written, saying why this part is missing
        log.exception("a part of the quality report could not be read")
        return None, f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"


def status(summary: dict) -> str:
    """error: a part is missing, an ERROR expectation or check failed, a cell does not reconcile, or
    the legacy system differs beyond the tolerance;
    warn: only warnings failed; ok otherwise."""
    suites = summary["suites"]
    checks = [c for c in summary["checks"] if c["status"] == "failed"]
    recon = summary["reconciliation"]
    legacy = summary.get("legacy")
    if summary["problems"] or (recon and recon["mismatched_cells"]) or (legacy and legacy["differing_rows"]):
        return "error"
    if any(s.get("severity") == "ERROR" for s in suites) or any(c.get("severity") == "ERROR" for c in checks):
        return "error"
    if any(s.get("severity") for s in suites) or checks:
        return "warn"
    return "ok"


def _hours(start: datetime, end: datetime) -> list[datetime]:
    out, hour = [], start
    while hour < end:
        out.append(hour)
        hour += HOUR
    return out


def _mismatch(m: reconcile.Mismatch) -> dict:
    return {
        "hour": _iso(m.hour),
        "event_type": m.event_type,
        "source": m.source,
        "raw": m.raw_distinct,
        "counted": m.rollup_count,
        "late_pending": m.late_count,
        "difference": m.difference,
    }


def _iso(t: datetime) -> str:
    return t.astimezone(UTC).isoformat().replace("+00:00", "Z")
