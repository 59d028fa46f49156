"""The daily quality report: every check's logic run over one day, written as a page people read,
the data behind it, and Great Expectations' Data Docs, into the state directory's quality/ folder,
which the API serves at /quality/."""

import fcntl
import json
import os
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
from pydantic import Field

from orchestration.defs.quality import report_page, report_summary
from orchestration.defs.quality.checks import quality_checks
from orchestration.defs.resources import TallyResource
from orchestration.defs.stream.assets import LATE_EVENTS, RAW_EVENTS, ROLLUP_1H, ROLLUP_1M
from orchestration.defs.stream.checks import stream_freshness_checks
from tally.legacy import compare

KEY = dg.AssetKey(["quality", "quality_report"])
# Today is a partition too (end_offset=1), so "run it now" from the UI reports the day so far.
daily = dg.DailyPartitionsDefinition(start_date="2026-11-01", timezone="UTC", end_offset=1)
# The checks on the stream's tables whose latest results the report shows.
STREAM_CHECKS = [key for checks in (*stream_freshness_checks, *quality_checks) for key in checks.check_keys]


class ReportConfig(dg.Config):
    sample: int = Field(default=5000, ge=1, description="Raw events of the day read from Cassandra for the raw suite.")


@dg.asset(
    key=KEY,
    group_name="quality",
    kinds={"python", "html"},
    deps=[ROLLUP_1M, ROLLUP_1H, RAW_EVENTS, LATE_EVENTS],
    partitions_def=daily,
)
def quality_report(context: dg.AssetExecutionContext, config: ReportConfig, tally: TallyResource):
    """The data-quality report of one day (UTC), for anyone who relies on Tally's numbers: events and
    late events per hour, whether every raw event of each closed hour is counted exactly once
    (reconciliation), whether the legacy system agrees (when migrating from one), which
    expectations on the rollups and the raw events broke, with examples, and the latest freshness
    and expectation checks on the stream's tables.

    Read it at the API's /quality/ (a page that needs no network), with Great Expectations' Data
    Docs behind it for every row; summary.json holds the same as data. Built every night for the
    day just ended; materialize a partition to build another day, today's included, at once. The
    run fails, after writing the report, when a store could not be read.
    """
    settings = tally.settings()
    window = context.partition_time_window
    start, end = window.start.astimezone(UTC), window.end.astimezone(UTC)
    out = settings.quality_dir
    summary = gather(context, settings, start, end, config.sample)
    problems = summary["problems"]
    with _locked(out):
        docs, error = report_summary.part(lambda: _data_docs(out, summary, settings), context.log)
        if error:
            problems.append(f"Data Docs: {error}")
        summary["data_docs"] = docs
        public = _public(summary)
        _write(out / "summary.json", json.dumps(public, indent=1, default=str))
        _write(out / "index.html", report_page.render(public))
    metadata = _metadata(public, out)
    if problems:
        raise dg.Failure(description="the report is written, but " + "; ".join(problems), metadata=metadata)
    return dg.MaterializeResult(metadata=metadata)


def gather(context, settings, start: datetime, end: datetime, sample: int) -> dict:
    """Every part of the report; a part that cannot be read is named in `problems`."""
    from expectations import validate_raw_sample, validate_rollups

    log, problems = context.log, []

    def read(name: str, fn):
        value, error = report_summary.part(fn, log)
        if error:
            problems.append(f"{name}: {error}")
        return value

    outcomes = [
        read("rollup expectations", lambda: validate_rollups(settings, start, end)),
        read("raw event expectations", lambda: validate_raw_sample(settings, start, end, sample)),
    ]
    hours = read("events per hour", lambda: report_summary.per_hour(settings, start, end))
    recon = read("reconciliation", lambda: report_summary.reconciliation(settings, start, end))
    legacy = read("legacy comparison", lambda: compare.recorded(settings, start, end))
    if legacy is not None and not legacy["rows"] and not settings.legacy_dsn:
        legacy = None  # never migrating from a legacy system: nothing to say about one
    return {
        "day": context.partition_key,
        "window": {"start": start.isoformat(), "end": end.isoformat()},
        "built_at": datetime.now(UTC).isoformat(),
        "totals": {f: sum(h[f] for h in hours) for f in report_summary.HOUR_FIELDS} if hours else {},
        "hours": hours,
        "reconciliation": recon,
        "legacy": legacy,
        "checks": report_summary.latest_checks(context.instance, STREAM_CHECKS),
        "outcomes": [o for o in outcomes if o is not None],
        "problems": problems,
    }


def _data_docs(out: Path, summary: dict, settings) -> dict:
    from expectations import data_docs, raw_event_suite, rollup_suite

    outcomes = summary["outcomes"]
    docs = data_docs.build(
        out,
        outcomes,
        [lambda: rollup_suite.build_suite(settings), lambda: raw_event_suite.build_suite(settings)],
        run_name=summary["day"],  # the Data Docs' index lists validations by run name: the day reported
    )
    return {"index": docs.index, "pages": docs.pages, "external": docs.external}


def _public(summary: dict) -> dict:
    """The summary as written: each suite's outcome cut to what the report shows (GX's whole result
    is in the Data Docs)."""
    pages = (summary.get("data_docs") or {}).get("pages", {})
    suites = [report_summary.suite(o, pages.get(o.suite)) for o in summary["outcomes"]]
    public = {k: v for k, v in summary.items() if k != "outcomes"} | {"suites": suites}
    return public | {"status": report_summary.status(public)}


def _metadata(summary: dict, out: Path) -> dict:
    recon = summary["reconciliation"] or {}
    totals = summary["totals"]
    return {
        "status": dg.MetadataValue.text(summary["status"]),
        "report": dg.MetadataValue.path(str(out / "index.html")),
        "served_at": dg.MetadataValue.text("the API's /quality/"),
        "events": dg.MetadataValue.int(totals.get("events", 0)),
        "late_events": dg.MetadataValue.int(totals.get("late", 0)),
        "late_pending": dg.MetadataValue.int(totals.get("late_pending", 0)),
        "duplicates": dg.MetadataValue.int(totals.get("duplicates", 0)),
        "mismatched_cells": dg.MetadataValue.int(recon.get("mismatched_cells", 0)),
        "legacy_differing_rows": dg.MetadataValue.int((summary.get("legacy") or {}).get("differing_rows", 0)),
        "expectations_broken": dg.MetadataValue.int(sum(len(s["failed"]) for s in summary["suites"])),
        "not_checked": dg.MetadataValue.md("\n".join(f"- {p}" for p in summary["problems"]) or "nothing"),
    }


@contextmanager
def _locked(out: Path):
    """One report build at a time writes the folder (the schedule and a run from the UI may overlap)."""
    out.mkdir(parents=True, exist_ok=True)
    with open(out / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _write(path: Path, text: str) -> None:
    """Replace a file whole, so a reader (the API) never sees half of it."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
