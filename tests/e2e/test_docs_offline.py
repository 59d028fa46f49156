"""The API reference at /docs works with no network: its assets come from the API, nothing else is asked for."""

from __future__ import annotations

import re
from pathlib import Path

SCREENSHOT = Path(__file__).parent.parent.parent / "artifacts" / "docs.png"
# FastAPI's get_swagger_ui_html writes its stylesheet, favicon and script as href="..." and src="...".
ASSET_REF = re.compile(r'(?:href|src)="([^"]+)"')


def test_docs_show_the_api_operations_with_every_outside_request_blocked(api, driver):
    SCREENSHOT.parent.mkdir(exist_ok=True)
    seen = driver("docs.mjs", str(api.base_url), str(SCREENSHOT))
    assert seen["errors"] == [], seen["errors"]
    assert seen["blocked"] == [], "the docs page asked for something outside the API's origin"
    assert seen["failed"] == [], seen["failed"]
    assert {"POST /api/events", "GET /api/aggregate", "GET /api/filtered_events"} <= set(seen["operations"])
    assert seen["styled"], "the operations rendered without Swagger UI's stylesheet"


def test_assets_the_docs_page_references_are_served_by_the_api(api):
    page = api.get("/docs")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    refs = ASSET_REF.findall(page.text)
    # text/ or application/javascript, depending on the mime.types of the machine serving it.
    expected_types = {".js": "javascript", ".css": "text/css", ".png": "image/png"}
    assert sorted(Path(r).suffix for r in refs) == sorted(expected_types)
    for ref in refs:
        # A path on the API itself: "//host/..." or "https://..." would be another origin.
        assert ref.startswith("/") and not ref.startswith("//"), ref
        asset = api.get(ref)
        assert asset.status_code == 200, ref
        assert expected_types[Path(ref).suffix] in asset.headers["content-type"], ref


def test_redoc_is_off_and_docs_is_not_listed_as_an_operation(api):
    assert api.get("/redoc").status_code == 404
    paths = api.get("/openapi.json").json()["paths"]
    assert "/docs" not in paths and "/redoc" not in paths
    assert "/api/events" in paths  # the schema the page renders is still complete
