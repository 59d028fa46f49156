"""Errors as problem details (RFC 9457) that name the field and the reason."""

from __future__ import annotations

import logging

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

log = logging.getLogger("tally.api")


class ParamError(Exception):
    """A query parameter is invalid: answered 422 naming it."""

    def __init__(self, field: str, message: str):
        self.field = field
        self.message = message
        super().__init__(f"{field}: {message}")


def problem(
    status: int, title: str, detail: str, errors: list[dict] | None = None, headers=None, extra: dict | None = None
) -> JSONResponse:
    body = {"type": "about:blank", "title": title, "status": status, "detail": detail, **(extra or {})}
    if errors is not None:
        body["errors"] = errors
    return JSONResponse(body, status_code=status, headers=headers, media_type="application/problem+json")


async def param_error_handler(_request: Request, exc: ParamError) -> JSONResponse:
    return problem(422, "Invalid parameter", str(exc), [{"field": exc.field, "message": exc.message}])


class TooCostly(Exception):
    """A query would cost more than its limit: answered 422 with what to change."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


_HINT = "ask for a coarser granularity, fewer groups (group_by), fewer event types or a shorter range"


async def too_costly_handler(_request: Request, exc: Exception) -> JSONResponse:
    detail = getattr(exc, "message", None) or "the query ran longer than its time limit"
    return problem(422, "Query too costly", f"{detail}; {_HINT}", [{"field": None, "message": detail}])


def store_unavailable(store: str):
    """A store is down or restarting: a 503 the client may retry, not a 500. Ingest needs neither
    store and keeps accepting. The answer says what happened in words a dashboard can show; the
    driver's own text (hosts, ports, nested error maps) goes to the log for the operator."""

    async def handler(request: Request, exc: Exception) -> JSONResponse:
        retry = request.app.state.settings.retry_after_s
        log.warning("%s unavailable for %s: %s: %s", store, request.url.path, type(exc).__name__, exc)
        detail = f"{store} {_what_happened(exc)}; nothing was lost, ask again in {retry} s"
        return problem(503, f"{store} unavailable", detail, headers={"Retry-After": str(retry)})

    return handler


def _what_happened(exc: Exception) -> str:
    text = f"{type(exc).__name__} {exc}"
    errors = getattr(exc, "errors", None)
    if isinstance(errors, dict):  # the Cassandra driver's NoHostAvailable: what failed, per host
        text += "".join(f" {type(e).__name__} {e}" for e in errors.values())
    text = text.lower()
    if "pooltimeout" in text:
        return "gave no connection in time (down, or every connection busy)"
    if "timeout" in text or "timed out" in text:
        return "did not answer in time"
    return "cannot be reached"


async def validation_error_handler(_request: Request, exc: RequestValidationError) -> JSONResponse:
    errors = []
    for e in exc.errors():
        loc = [str(p) for p in e.get("loc", ()) if p not in ("query", "body", "path", "header")]
        errors.append({"field": ".".join(loc) or None, "message": e.get("msg", "invalid")})
    detail = "; ".join(f"{e['field']}: {e['message']}" for e in errors)
    return problem(422, "Invalid parameter", detail, errors)


async def rate_limited_handler(_request: Request, exc: Exception) -> JSONResponse:
    retry = getattr(exc, "retry_after_s", 1)
    return problem(429, "Too many requests", str(exc), headers={"Retry-After": str(retry)})
