"""Scopes on routes: `Depends(scope("events:read"))` lets a request through with a bearer token or
API key that grants the scope, else answers 401 (no or bad credentials) or 403 (scope missing).

Credentials, first found wins: `Authorization: Bearer <JWT or API key>`, `X-API-Key: <key>`, and
for GET and HEAD only, the browser UI's HttpOnly session cookie (SameSite=Strict, set by
routes/auth.py after sign-in), so a page on another site cannot make a browser write with it.
"""

from __future__ import annotations

from typing import Annotated
from urllib.parse import urlencode

from fastapi import Depends, Request, Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from starlette.responses import RedirectResponse, Response

from tally.api.problems import problem
from tally.auth.apikeys import KeyChecker
from tally.auth.tokens import AuthError, Principal, TokenVerifier

COOKIE = "tally_session"
SAFE = ("GET", "HEAD")
LOOPBACK = ("127.0.0.1", "::1", "localhost")

_bearer = HTTPBearer(
    auto_error=False,
    scheme_name="bearer",
    description="An OAuth2 access token (JWT) of the configured issuer, or an API key (`tally apikey create`)."
    " Locally, `tally token` prints one with every scope. Scopes: events:write (ingest), events:read"
    " (aggregates, events, named metrics), tally:admin (operations).",
)
_api_key = APIKeyHeader(name="X-API-Key", auto_error=False, scheme_name="apiKey", description="An API key.")


class Guard:
    """One per worker (app.state.guard): the token verifier and the API key checker."""

    def __init__(self, tokens: TokenVerifier, keys: KeyChecker, enabled: bool):
        self.tokens = tokens
        self.keys = keys
        self.enabled = enabled

    async def principal(self, request: Request, bearer: str | None, api_key: str | None) -> Principal:
        if bearer:
            return await (self.tokens.verify(bearer) if bearer.count(".") == 2 else self.keys.check(bearer))
        if api_key:
            return await self.keys.check(api_key)
        cookie = request.cookies.get(COOKIE)
        if cookie and request.method in SAFE:
            return await self.tokens.verify(cookie, via="cookie")
        raise AuthError(401, "missing_token", "send a bearer token (Authorization: Bearer ...) or an API key")


def scope(needed: str):
    """A dependency that lets only callers granted `needed` through. The Security parameters put the
    two schemes in the OpenAPI schema; the check itself reads the headers (authorize)."""

    async def check(
        request: Request,
        _bearer_doc: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)],
        _key_doc: Annotated[str | None, Security(_api_key)],
    ) -> Principal:
        return await authorize(request, needed)

    return check


async def authorize(request: Request, needed: str) -> Principal:
    guard: Guard = request.app.state.guard
    if not guard.enabled:
        return Principal("anonymous", frozenset({needed}), "open")
    bearer = None
    if header := request.headers.get("authorization"):
        kind, _, value = header.partition(" ")
        if kind.lower() != "bearer" or not value.strip():
            raise AuthError(401, "invalid_request", "the Authorization header is not `Bearer <token>`", needed)
        bearer = value.strip()
    try:
        principal = await guard.principal(request, bearer, request.headers.get("x-api-key"))
    except AuthError as e:
        e.scope = needed
        raise
    if needed not in principal.scopes:
        raise AuthError(403, "insufficient_scope", f"this needs the scope {needed}", needed)
    request.state.principal = principal
    return principal


def is_loopback(request: Request) -> bool:
    return request.client is not None and request.client.host in LOOPBACK


async def auth_error_handler(request: Request, exc: AuthError) -> Response:
    if exc.status == 401 and request.method in SAFE and "text/html" in request.headers.get("accept", ""):
        # A person's browser opening a page (the quality report): signed in, then brought back.
        here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse(f"/auth/login?{urlencode({'next': here})}", status_code=303)
    challenge = 'Bearer realm="tally"'
    # RFC 6750: no error code in the challenge when no credentials came; the body always has one.
    if exc.code != "missing_token":
        challenge += f', error="{exc.code}", error_description="{exc.description.replace(chr(34), chr(39))}"'
    if exc.scope:
        challenge += f', scope="{exc.scope}"'
    title = "Forbidden" if exc.status == 403 else "Unauthorized"
    extra = {"error": exc.code} | ({"scope": exc.scope} if exc.scope else {})
    return problem(exc.status, title, exc.description, headers={"WWW-Authenticate": challenge}, extra=extra)


ReadScope = Depends(scope("events:read"))
WriteScope = Depends(scope("events:write"))
AdminScope = Depends(scope("tally:admin"))
