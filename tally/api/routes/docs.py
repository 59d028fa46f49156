"""GET /docs: the interactive API reference (Swagger UI), from the vendored copy so it works offline."""

from __future__ import annotations

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse

router = APIRouter()

# Inside tally/api/static, which the app mounts as "ui"; see vendor/VENDORED.md for the version.
ASSETS = "vendor/swagger-ui"
SCHEMA = "/openapi.json"


def asset_url(request: Request, name: str) -> str:
    """Where the static mount serves a vendored Swagger UI file, so moving the mount moves these too."""
    root = request.scope.get("root_path", "").rstrip("/")
    return root + request.app.url_path_for("ui", path=f"{ASSETS}/{name}")


@router.get("/docs", response_class=HTMLResponse, include_in_schema=False)
async def swagger_ui(request: Request) -> HTMLResponse:
    root = request.scope.get("root_path", "").rstrip("/")
    return get_swagger_ui_html(
        openapi_url=root + (request.app.openapi_url or SCHEMA),
        title=f"{request.app.title} - API reference",
        swagger_js_url=asset_url(request, "swagger-ui-bundle.js"),
        swagger_css_url=asset_url(request, "swagger-ui.css"),
        # FastAPI's default favicon is on fastapi.tiangolo.com.
        swagger_favicon_url=asset_url(request, "favicon-32x32.png"),
        # Swagger UI's validator badge would send the schema's URL to validator.swagger.io.
        swagger_ui_parameters={"validatorUrl": None},
    )


def protect_schema(app: FastAPI, dependency) -> None:
    """With TALLY_AUTH_DOCS_OPEN=false: the schema only for callers the dependency lets through (a
    browser signed in to the UI is, by its cookie). The page itself holds nothing without it."""

    @app.get(SCHEMA, include_in_schema=False, dependencies=[Depends(dependency)])
    async def schema() -> JSONResponse:
        return JSONResponse(app.openapi())
