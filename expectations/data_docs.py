"""Data Docs for the quality report: the suites and their validation results as GX's own HTML site,
readable with no network.

    build(root, outcomes, suites, run_name) -> DataDocs

A file context under `root/gx/` keeps the suites and every validation result of the last KEEP_DAYS
(so the site's index is a history); the site itself is written to `root/data_docs/`. Results come
in as SuiteOutcomes (expectations.run), whose `result_json` is GX's own serialisation: they are
loaded back, not validated again.

GX 1.24's pages load Bootstrap, jQuery, bootstrap-table, Font Awesome and vega from CDNs and a logo
from GX's S3 bucket. Every page is rewritten after the build to load vendored copies
(`vendor/`, see vendor/VENDORED.md) from the site's `static/vendor/` instead; what was left out is
removed. Anything else a page still loads from outside is returned in `DataDocs.external`, so a GX
upgrade that adds a CDN is noticed (the quality report's test fails on it).
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import unquote, urlparse

from expectations.outcome import SuiteOutcome

VENDOR = Path(__file__).parent / "vendor"
SITE = "local_site"  # GX's name for a context's default site
SITE_DIR = "data_docs"
# Validation results older than this are dropped from the context and the site.
KEEP_DAYS = 31

# Each CDN address GX 1.24's templates load -> the vendored file that replaces it, under static/vendor/.
LOCAL = {
    "https://maxcdn.bootstrapcdn.com/bootstrap/4.3.1/css/bootstrap.min.css": "bootstrap/bootstrap.min.css",
    "https://stackpath.bootstrapcdn.com/bootstrap/4.3.1/js/bootstrap.min.js": "bootstrap/bootstrap.min.js",
    "https://code.jquery.com/jquery-3.7.1.min.js": "jquery/jquery.min.js",
    "https://cdnjs.cloudflare.com/ajax/libs/popper.js/1.12.9/umd/popper.min.js": "popper/popper.min.js",
    "https://unpkg.com/bootstrap-table@1.19.1/dist/bootstrap-table.min.css": "bootstrap-table/bootstrap-table.min.css",
    "https://unpkg.com/bootstrap-table@1.19.1/dist/bootstrap-table.min.js": "bootstrap-table/bootstrap-table.min.js",
    "https://unpkg.com/bootstrap-table@1.19.1/dist/extensions/filter-control/bootstrap-table-filter-control.min.js": (
        "bootstrap-table/bootstrap-table-filter-control.min.js"
    ),
    "https://unpkg.com/bootstrap-table@1.19.0/dist/extensions/filter-control/bootstrap-table-filter-control.min.css": (
        "bootstrap-table/bootstrap-table-filter-control.min.css"
    ),
    "https://unpkg.com/bootstrap-table@1.19.0/dist/extensions/filter-control/bootstrap-table-filter-control.css": (
        "bootstrap-table/bootstrap-table-filter-control.min.css"
    ),
    "https://cdnjs.cloudflare.com/ajax/libs/bootstrap-datepicker/1.9.0/css/bootstrap-datepicker.min.css": (
        "bootstrap-datepicker/bootstrap-datepicker.min.css"
    ),
    "https://cdnjs.cloudflare.com/ajax/libs/bootstrap-datepicker/1.9.0/js/bootstrap-datepicker.min.js": (
        "bootstrap-datepicker/bootstrap-datepicker.min.js"
    ),
    "https://cdnjs.cloudflare.com/ajax/libs/font-awesome/6.6.0/css/all.min.css": "fontawesome/css/all.min.css",
}
# Not vendored (see vendor/VENDORED.md): their tags are removed.
DROPPED = ("https://cdn.jsdelivr.net/npm/@forevolve/bootstrap-dark@", "https://cdn.jsdelivr.net/npm/vega")
# GX's images (logos, in an <img> and in the dark theme's CSS), loaded from its S3 bucket with the
# data context's id in the address: pointed at the copies GX writes into the site's static/images/.
GX_IMAGES = re.compile(r"https://great-expectations-web-assets\.s3\.us-east-2\.amazonaws\.com/([\w.-]+)[^'\")\s]*")
GX_LOGO = "logo-long.png"  # for an image the site has no copy of (the dark theme's logo)
# A tag that loads something: <script src>, <link href> (stylesheets, icons), <img src>.
_LOADING_TAG = re.compile(r'<(script|link|img)\b[^>]*?\b(?:src|href)="(https?://[^"]*)"[^>]*>(?:\s*</script>)?', re.S)
# The site's own files, which GX 1.24 addresses one folder short from a validation page (the favicon).
_STATIC = re.compile(r'\b(src|href)="(?:\.\.?/)*static/')
_CSS_URL = re.compile(r"url\(\s*['\"]?((?:https?:)?//[^'\")]+)")


@dataclass(frozen=True)
class DataDocs:
    index: str  # the site's index page, relative to root
    pages: dict[str, str]  # suite -> the page of this run's validation result, relative to root
    external: list[str] = field(default_factory=list)  # what a page still loads from outside (should be none)


def build(
    root: Path, outcomes: Sequence[SuiteOutcome], suites: Sequence[Callable[[], object]], run_name: str
) -> DataDocs:
    """Store `outcomes` under `run_name` with their suites in the file context at root/gx, rebuild
    the site in root/data_docs, and make it load nothing from outside. `suites`: functions that
    build the ExpectationSuites (GX makes a suite only once a context exists)."""
    from great_expectations.data_context.types.resource_identifiers import ExpectationSuiteIdentifier

    context = _context(root)
    suites = [context.suites.add_or_update(make()) for make in suites]
    keys = {outcome.suite: _store(context, outcome, run_name) for outcome in outcomes}
    _prune(context, datetime.now(UTC) - timedelta(days=KEEP_DAYS))
    shown = [ExpectationSuiteIdentifier(s.name) for s in suites] + list(keys.values())
    context.build_data_docs(site_names=[SITE], resource_identifiers=shown)
    site = root / SITE_DIR
    _copy_vendor(site)
    external = sorted({url for page in site.rglob("*.html") for url in localize_page(page, site)})
    pages = {suite: _page(context, key).relative_to(root).as_posix() for suite, key in keys.items()}
    return DataDocs(index=f"{SITE_DIR}/index.html", pages=pages, external=external)


def _context(root: Path):
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="file", project_root_dir=str(root))
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    site = {
        "class_name": "SiteBuilder",
        # The "how to" buttons and the footer are GX's own calls to action, links to its website.
        "show_how_to_buttons": False,
        "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(root / SITE_DIR)},
        "site_index_builder": {"class_name": "DefaultSiteIndexBuilder", "show_cta_footer": False},
    }
    if SITE in context.list_data_docs_sites():
        context.update_data_docs_site(SITE, site)
    else:
        context.add_data_docs_site(SITE, site)
    return context


def _store(context, outcome: SuiteOutcome, run_name: str):
    from great_expectations.core.expectation_validation_result import ExpectationSuiteValidationResultSchema
    from great_expectations.core.run_identifier import RunIdentifier
    from great_expectations.data_context.types.resource_identifiers import (
        ExpectationSuiteIdentifier,
        ValidationResultIdentifier,
    )

    result = ExpectationSuiteValidationResultSchema().load(outcome.result_json)
    meta = result.meta or {}
    run = RunIdentifier(run_name=run_name, run_time=(meta.get("run_id") or {}).get("run_time"))
    batch = (meta.get("active_batch_definition") or {}).get("data_asset_name") or outcome.suite
    key = ValidationResultIdentifier(ExpectationSuiteIdentifier(outcome.suite), run, batch)
    context.validation_results_store.set(key, result)
    return key


def _prune(context, before: datetime) -> None:
    """Drop validation results run before `before`, with their pages."""
    store = context.validation_results_store
    for key in store.list_keys():
        run_time = key.run_id.run_time
        if run_time is not None and run_time.astimezone(UTC) < before:
            _page(context, key).unlink(missing_ok=True)
            store.remove_key(key)


def _page(context, key) -> Path:
    (site,) = context.get_docs_sites_urls(resource_identifier=key, site_name=SITE)
    return Path(unquote(urlparse(site["site_url"]).path))


def _copy_vendor(site: Path) -> None:
    target = site / "static" / "vendor"
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(VENDOR, target, ignore=shutil.ignore_patterns("*.md"))


def localize_page(page: Path, site: Path) -> list[str]:
    """Rewrite one page of the site in place; the addresses it still loads from outside."""
    text = page.read_text(encoding="utf-8")
    images = {p.name for p in (site / "static" / "images").glob("*")}
    rewritten, external = localize(text, "../" * (len(page.relative_to(site).parts) - 1), images)
    if rewritten != text:
        page.write_text(rewritten, encoding="utf-8")
    return external


def localize(html: str, to_site_root: str, images: set[str] = frozenset()) -> tuple[str, list[str]]:
    """`html` with its CDN tags pointing at the vendored copies and GX's images at the site's
    (`to_site_root`: the relative path from the page to the site's root, e.g. "../../"; `images`:
    the files in the site's static/images/), and the addresses it still loads from outside."""
    external: list[str] = []

    def swap(match: re.Match) -> str:
        tag, url = match.group(1), match.group(2)
        if url in LOCAL:
            local = f"{to_site_root}static/vendor/{LOCAL[url]}"
            # A new tag: the CDN's integrity and crossorigin attributes do not hold for a local file.
            return f'<script src="{local}"></script>' if tag == "script" else f'<link rel="stylesheet" href="{local}">'
        if url.startswith(DROPPED):
            return ""
        if not GX_IMAGES.match(url):  # GX's images are handled below, wherever they appear
            external.append(url)
        return match.group(0)

    def image(match: re.Match) -> str:
        name = match.group(1) if match.group(1) in images else GX_LOGO
        return f"{to_site_root}static/images/{name}"

    html = _LOADING_TAG.sub(swap, html)
    html = GX_IMAGES.sub(image, html)
    html = _STATIC.sub(lambda m: f'{m.group(1)}="{to_site_root}static/', html)
    return html, external + _CSS_URL.findall(html)
