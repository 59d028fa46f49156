"""GET /quality/: the latest data-quality report, as Dagster's quality/quality_report asset wrote it
into the state directory (Settings.quality_dir): its page, summary.json, and Great Expectations'
Data Docs under data_docs/. The API only serves those files; it never builds a report.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Request
from fastapi import Path as PathParam
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response

from tally.api.deps import SettingsDep
from tally.api.problems import problem

router = APIRouter(tags=["quality"])

# Great Expectations' working folder (its config and the stored results the Data Docs are built
# from) sits beside the report but is not part of it; nor are dot-files (the build's lock).
PRIVATE = "gx"
# The report is rebuilt in place: a browser should ask again rather than show yesterday's from cache.
FRESH = {"Cache-Control": "no-cache"}

NO_REPORT = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Tally data quality: no report yet</title>
<style>body { font-family: system-ui, sans-serif; max-width: 40rem; margin: 3rem auto; padding: 0 1rem;
line-height: 1.5; color: #1f2328; } code { background: #f6f8fa; padding: 0 .2rem; }</style></head>
<body><h1>No report yet</h1>
<p>The data-quality report is built daily by Dagster's <code>quality/quality_report</code> asset, for the
day just ended (the <code>daily_quality_report</code> schedule, 00:45 UTC).</p>
<p>To build one now, run it from Dagster: open the asset <code>quality/quality_report</code>, choose
<em>Materialize</em> and pick a day (today's is there too). This page shows it once the run ends.</p>
<p><a href="/">Back to Tally</a></p></body></html>
"""


@router.get("/quality", include_in_schema=False)
async def quality_root(request: Request) -> RedirectResponse:
    """The page's links are relative (it reads the same from disk): they need the trailing slash."""
    return RedirectResponse(request.scope.get("root_path", "").rstrip("/") + "/quality/", status_code=307)


@router.get(
    "/quality/{path:path}",
    summary="The latest data-quality report",
    response_class=HTMLResponse,
    responses={
        200: {
            "description": "With an empty path, the report's page (HTML, readable offline). Otherwise one of its"
            " files: `summary.json` (the report as data), `data_docs/index.html` and the rest of Great"
            " Expectations' Data Docs.",
            "content": {
                "text/html": {"schema": {"type": "string"}},
                "application/json": {"schema": {"type": "object"}},
                "*/*": {"schema": {"type": "string", "format": "binary"}},
            },
        },
        404: {
            "description": "No report yet (an HTML page saying how to build one), or no such file in it. A"
            " path with a line break never reaches this route: the API's plain JSON 404 answers it.",
            "content": {
                "text/html": {"schema": {"type": "string"}},
                "application/problem+json": {"schema": {"type": "object"}},
                "application/json": {"schema": {"type": "object"}},
            },
        },
    },
)
async def quality_report(
    path: Annotated[str, PathParam(description="A file of the report; empty for its page.")],
    settings: SettingsDep,
) -> Response:
    """The report Dagster's `quality/quality_report` asset builds every night for the day just ended:
    events and late events per hour, the reconciliation of every closed hour, broken expectations
    with examples, and the latest checks on the stream's tables."""
    found = report_file(settings.quality_dir, path)
    if found is not None:
        return FileResponse(found, headers=FRESH)
    if path in ("", "index.html"):
        return HTMLResponse(NO_REPORT, status_code=404, headers=FRESH)
    return problem(404, "Not found", f"the quality report has no file {path!r}")


def report_file(root: Path, path: str) -> Path | None:
    """The file `path` names inside the report folder (a folder's index.html), or None: missing,
    private, or outside the folder (`..`, an absolute path, a symlink pointing out)."""
    try:
        base = root.resolve()
        target = (base / path).resolve()
        if not target.is_relative_to(base):
            return None
        parts = target.relative_to(base).parts
        if parts[:1] == (PRIVATE,) or any(p.startswith(".") for p in parts):
            return None
        if target.is_dir():
            target = target / "index.html"
        return target if target.is_file() else None
    except (OSError, ValueError):  # a name too long, a NUL byte
        return None
