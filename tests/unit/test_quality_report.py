"""The quality layer's pure parts: the report page rendered from a summary, Data Docs made to load
nothing from outside, a suite's broken expectations blamed on the right table, the checks' window."""

from __future__ import annotations

import re
import subprocess
import sys
from datetime import UTC, datetime

import dagster as dg

from expectations.data_docs import localize
from expectations.outcome import ExpectationOutcome, SuiteOutcome
from orchestration.defs.quality.check_results import per_table, severity_of
from orchestration.defs.quality.checks import Window
from orchestration.defs.quality.report_page import bars, render

M1, H1 = dg.AssetKey(["stream", "rollup_1m"]), dg.AssetKey(["stream", "rollup_1h"])
WIDTHS = {60: M1, 3600: H1}


def hour(h: int, **counts) -> dict:
    return {"hour": f"2026-11-05T{h:02d}:00:00Z", "events": 0, "late": 0, "late_pending": 0, "late_added": 0,
            "duplicates": 0, **counts}  # fmt: skip


def summary(**over) -> dict:
    s = {
        "day": "2026-11-05",
        "built_at": "2026-11-06T00:45:12+00:00",
        "status": "error",
        "totals": {"events": 1200, "late": 3, "late_pending": 1, "late_added": 1, "duplicates": 1},
        "hours": [hour(h, events=50) for h in range(7)]
        + [hour(7, events=50, late=3, late_pending=1, late_added=1, duplicates=1)]
        + [hour(h, events=50) for h in range(8, 24)],
        "reconciliation": {
            "closed_until": "2026-12-01T00:00:00Z",
            "hours_checked": 24,
            "mismatched_cells": 1,
            "hours": [
                {"hour": f"2026-11-05T{h:02d}:00:00Z", "closed": True, "mismatched_cells": 0, "difference": 0}
                for h in range(24)
            ],
            "mismatches": [
                {
                    "hour": "2026-11-05T07:00:00Z",
                    "event_type": "x.lost",
                    "source": "<b>web</b>",
                    "raw": 0,
                    "counted": 5,
                    "late_pending": 0,
                    "difference": -5,
                }
            ],
        },
        "suites": [
            {
                "suite": "tally.rollups",
                "success": False,
                "severity": "ERROR",
                "statistics": {"evaluated_expectations": 15, "successful_expectations": 14},
                "failed": [
                    {
                        "description": "value_min <= value_max",
                        "severity": "ERROR",
                        "unexpected_count": 1,
                        "sentence": "...",
                        "examples": [{"event_type": "x.bad", "value_min": 5.0}],
                    }
                ],
                "data_docs": "data_docs/validations/tally/rollups/2026-11-05/x/rollup_rows.html",
            },
        ],
        "checks": [
            {
                "asset": "stream/rollup_1m",
                "check": "freshness_check",
                "status": "failed",
                "severity": "ERROR",
                "at": "2026-11-06T00:40:00Z",
                "description": "stale",
            }
        ],
        "problems": [],
        "data_docs": {"index": "data_docs/index.html", "pages": {}, "external": []},
    }
    return s | over


def test_the_page_shows_the_day_with_nothing_loaded_and_every_text_escaped():
    page = render(summary())
    assert "<script" not in page and not re.search(r'(src|href)="(https?:)?//', page)
    assert "Data quality, 2026-11-05" in page and "needs attention" in page
    assert "1,200" in page and "x.lost" in page and "-5" in page and "value_min &lt;= value_max" in page
    assert "&lt;b&gt;web&lt;/b&gt;" in page and "<b>web</b>" not in page
    assert 'href="data_docs/index.html"' in page and 'href="summary.json"' in page
    assert page.count("<svg") == 2  # events per hour, late events per hour


def test_a_quiet_day_has_no_late_chart_and_a_day_not_read_says_why():
    page = render(summary(hours=[hour(h) for h in range(24)], problems=["reconciliation: Cassandra at ...: down"]))
    assert page.count("<svg") == 1 and "No late events this day" in page
    assert "Cassandra at ...: down" in page
    assert "<svg" in bars(["00", "01"], [("events", [0, 0], "#000")], "nothing")  # no division by zero


CDN_PAGE = """<head>
<link rel="stylesheet" href="https://maxcdn.bootstrapcdn.com/bootstrap/4.3.1/css/bootstrap.min.css"/>
<link rel="stylesheet" href="https://cdn.jsdelivr.net/npm/@forevolve/bootstrap-dark@1.1.0/dist/css/bootstrap-prefers-dark.css" />
<script src="https://cdnjs.cloudflare.com/ajax/libs/popper.js/1.12.9/umd/popper.min.js" integrity="sha384-x" crossorigin="anonymous"></script>
<script src="https://cdn.jsdelivr.net/npm/vega@5"></script>
<script src="https://example.com/new.js"></script>
<link rel="shortcut icon" href="../../static/images/favicon.ico" type="image/x-icon"/>
<style>.a { background: url('https://great-expectations-web-assets.s3.us-east-2.amazonaws.com/full_logo_dark.png') }</style>
</head><body><img src="https://great-expectations-web-assets.s3.us-east-2.amazonaws.com/logo-long.png?d=1&amp;dataContextId=2">
<a href="https://greatexpectations.io">a link is not a load</a></body>"""  # noqa: E501


def test_data_docs_pages_load_the_vendored_copies_at_their_depth():
    html, external = localize(CDN_PAGE, "../../../", {"logo-long.png", "favicon.ico"})
    assert '<link rel="stylesheet" href="../../../static/vendor/bootstrap/bootstrap.min.css">' in html
    assert '<script src="../../../static/vendor/popper/popper.min.js"></script>' in html  # no integrity
    assert "bootstrap-dark" not in html and "vega" not in html
    assert 'src="../../../static/images/logo-long.png"' in html and "dataContextId" not in html
    assert "url('../../../static/images/logo-long.png')" in html  # an image the site lacks: the logo
    assert 'href="../../../static/images/favicon.ico"' in html  # GX's own path is one folder short
    assert 'href="https://greatexpectations.io"' in html
    assert external == ["https://example.com/new.js"]


def expectation(description: str, count: int, severity: str = "ERROR") -> ExpectationOutcome:
    return ExpectationOutcome(
        "tally.rollups", "t", (), False, severity, count, [], f"{description}: broken", description
    )


def outcome(*pairs: tuple[ExpectationOutcome, dict]) -> SuiteOutcome:
    results = [{"result": r} for _, r in pairs]
    return SuiteOutcome("tally.rollups", False, [e for e, _ in pairs], {}, {"results": results})


def test_a_broken_expectation_counts_against_the_table_its_rows_come_from():
    minute_rows = {"unexpected_index_list": [{"width": 60, "bucket": "b"}]}
    hour_rows = {"details": {"unexpected_rows": [{"width": 3600}, {"width": 3600}]}}
    pairs = {"details": {"unexpected_rows": [{"hour": "h", "minute_rows": 2}]}}  # an hour and its minutes
    cut = {"unexpected_index_list": [{"width": 60}]}  # GX kept fewer rows than it counted
    found = per_table(
        outcome(
            (expectation("min", 1), minute_rows),
            (expectation("final", 2), hour_rows),
            (expectation("pairs", 1), pairs),
            (expectation("cut", 300), cut),
        ),
        WIDTHS,
    )
    assert [e.description for e in found[M1]] == ["min", "pairs", "cut"]
    assert [e.description for e in found[H1]] == ["final", "pairs", "cut"]


def test_severity_is_the_worst_broken_expectations():
    assert severity_of([expectation("a", 1, "WARN")]) == dg.AssetCheckSeverity.WARN
    assert severity_of([expectation("a", 1, "WARN"), expectation("b", 1)]) == dg.AssetCheckSeverity.ERROR


def test_the_window_ends_at_until_and_starts_whole_hours_before():
    start, end = Window(hours=2, until="2026-11-26T10:20:00+01:00").bounds()
    assert (start, end) == (datetime(2026, 11, 26, 7, tzinfo=UTC), datetime(2026, 11, 26, 9, 20, tzinfo=UTC))


def test_loading_the_quality_definitions_does_not_import_great_expectations():
    code = (
        "import sys, orchestration.defs.quality.assets, orchestration.defs.quality.schedules;"
        " sys.exit('great_expectations' in sys.modules)"
    )
    assert subprocess.run([sys.executable, "-c", code], capture_output=True).returncode == 0
