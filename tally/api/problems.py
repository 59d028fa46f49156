"""Errors as problem details (RFC 9457) that name the field and the reason."""

from __future__ import annotations

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse


class ParamError(Exception):
    """A query parameter is invalid: answered 422 naming it."""

    def __init__(self, field: str, message: str):
        self.field = field
        self.message = message
        super().__init__(f"{field}: {message}")


def problem(status: int, title: str, detail: str, errors: list[dict] | None = None, headers=None) -> JSONResponse:
    body = {"type": "about:blank", "title": title, "status": status, "detail": detail}
    if errors is not None:
        body["errors"] = errors
    return JSONResponse(body, status_code=status, headers=headers, media_type="application/problem+json")


async def param_error_handler(_request: Request, exc: ParamError) -> JSONResponse:
    return problem(422, "Invalid parameter", str(exc), [{"field": exc.field, "message": exc.message}])


async def store_unavailable_handler(_request: Request, exc: Exception) -> JSONResponse:
    """PostgreSQL is down or restarting: a 503 the client may retry, not a 500. Ingest does not
    need it and keeps accepting."""
    return problem(503, "Rollup store unavailable", f"PostgreSQL: {exc}", headers={"Retry-After": "5"})


async def validation_error_handler(_request: Request, exc: RequestValidationError) -> JSONResponse:
    errors = []
    for e in exc.errors():
        loc = [str(p) for p in e.get("loc", ()) if p not in ("query", "body", "path", "header")]
        errors.append({"field": ".".join(loc) or None, "message": e.get("msg", "invalid")})
    detail = "; ".join(f"{e['field']}: {e['message']}" for e in errors)
    return problem(422, "Invalid parameter", detail, errors)
