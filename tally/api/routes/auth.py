"""Signing in: the browser UI's sign-in (authorization code + PKCE, the API keeping the token in an
HttpOnly cookie: the backend-for-frontend pattern) against the configured OIDC issuer, and the
development issuer a local stack uses instead (its discovery document, keys, authorize and token
endpoints), which signs in browsers on loopback only.

The development issuer's authorization codes are themselves short-lived tokens signed with its key
and bound to the PKCE challenge: any API worker can redeem one, only with the verifier that the
signing-in worker kept in the browser's HttpOnly cookie, and only once (devissuer.redeem_once).
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import time
from typing import Annotated
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from joserfc import jwt
from joserfc.errors import JoseError

from tally.api.deps import SettingsDep
from tally.api.problems import problem
from tally.api.security import COOKIE, is_loopback
from tally.auth import devissuer
from tally.auth.tokens import AuthError, discover

router = APIRouter(tags=["auth"], include_in_schema=False)
SIGNIN_COOKIE = "tally_signin"
UI_SCOPES = "events:read tally:admin"
CODE_TTL_S = 60


def _challenge(verifier: str) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()


def _local_path(path: str | None) -> str:
    # Only a path on this site: "//evil.example" or "https://..." would make sign-in an open redirect.
    if not path or not path.startswith("/") or path.startswith("//") or "\\" in path:
        return "/"
    return path


def _base(request: Request) -> str:
    settings = request.app.state.settings
    return (settings.public_url or str(request.base_url)).rstrip("/")


async def _endpoints(request: Request) -> dict:
    settings = request.app.state.settings
    if not settings.auth_issuer:
        base = devissuer.issuer(settings)
        return {"authorization_endpoint": f"{_base(request)}/auth/dev/authorize", "token_endpoint": f"{base}/token"}
    async with httpx.AsyncClient(timeout=5.0) as client:
        return await discover(client, settings.auth_issuer)


@router.get("/auth/login")
async def login(request: Request, next: Annotated[str | None, Query()] = None) -> Response:
    """Send the browser to the issuer to sign in; it comes back to /auth/callback."""
    settings = request.app.state.settings
    if not settings.auth:
        return RedirectResponse(_local_path(next), status_code=303)
    verifier = secrets.token_urlsafe(48)
    state = secrets.token_urlsafe(16)
    try:
        endpoints = await _endpoints(request)
    except (httpx.HTTPError, ValueError) as e:
        return problem(503, "Sign-in unavailable", f"the issuer could not be asked ({type(e).__name__}); try again")
    params = {
        "response_type": "code",
        "client_id": settings.auth_client_id,
        "redirect_uri": f"{_base(request)}/auth/callback",
        "scope": f"openid {UI_SCOPES}" if settings.auth_issuer else UI_SCOPES,
        "state": state,
        "code_challenge": _challenge(verifier),
        "code_challenge_method": "S256",
    }
    response = RedirectResponse(f"{endpoints['authorization_endpoint']}?{urlencode(params)}", status_code=303)
    value = f"{state}.{verifier}.{base64.urlsafe_b64encode(_local_path(next).encode()).decode()}"
    # Lax, not Strict: it must come back with the issuer's top-level redirect to the callback.
    response.set_cookie(SIGNIN_COOKIE, value, max_age=600, httponly=True, samesite="lax", path="/auth")
    return response


@router.get("/auth/callback")
async def callback(request: Request, code: str = "", state: str = "", error: str = "") -> Response:
    settings = request.app.state.settings
    kept = request.cookies.get(SIGNIN_COOKIE, "").split(".")
    if error or len(kept) != 3 or not secrets.compare_digest(kept[0], state) or not code:
        return problem(
            400, "Sign-in failed", error[:200] or "the sign-in did not start here, or it expired: start again at /"
        )
    _, verifier, next_path = kept
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": f"{_base(request)}/auth/callback",
        "client_id": settings.auth_client_id,
        "code_verifier": verifier,
    }
    if settings.auth_client_secret:
        form["client_secret"] = settings.auth_client_secret
    try:
        endpoints = await _endpoints(request)
        async with httpx.AsyncClient(timeout=10.0) as client:
            r = await client.post(endpoints["token_endpoint"], data=form)
        answer = r.json() if r.status_code == 200 else {}
        token, expires = str(answer.get("access_token", "")), int(answer.get("expires_in", devissuer.DEFAULT_TTL_S))
        target = _local_path(base64.urlsafe_b64decode(next_path.encode()).decode(errors="replace"))
    except (httpx.HTTPError, KeyError, ValueError, TypeError) as e:
        return problem(503, "Sign-in failed", f"the issuer could not be asked ({type(e).__name__}); try again")
    if not token:
        return problem(400, "Sign-in failed", f"the issuer refused the code: {r.text[:300]}")
    try:
        await request.app.state.guard.tokens.verify(token)
    except AuthError as e:  # answered here: the 401 handler would send the browser round again
        return problem(400, "Sign-in failed", f"the issuer's token is not one this API takes: {e.description}")
    response = RedirectResponse(target, status_code=303)
    secure = _base(request).startswith("https://")
    response.set_cookie(COOKIE, token, max_age=expires, httponly=True, samesite="strict", secure=secure, path="/")
    response.delete_cookie(SIGNIN_COOKIE, path="/auth")
    return response


@router.get("/auth/logout")
async def logout() -> Response:
    response = RedirectResponse("/", status_code=303)
    response.delete_cookie(COOKIE, path="/")
    return response


@router.get("/auth/dev/.well-known/openid-configuration")
async def dev_discovery(request: Request, settings: SettingsDep) -> JSONResponse:
    base = devissuer.issuer(settings)
    return JSONResponse(
        {
            "issuer": base,
            "authorization_endpoint": f"{_base(request)}/auth/dev/authorize",
            "token_endpoint": f"{base}/token",
            "jwks_uri": f"{base}/jwks.json",
            "scopes_supported": list(devissuer.SCOPES),
            "response_types_supported": ["code"],
            "grant_types_supported": ["authorization_code"],
            "code_challenge_methods_supported": ["S256"],
            "token_endpoint_auth_methods_supported": ["none"],
        }
    )


@router.get("/auth/dev/jwks.json")
async def dev_jwks(settings: SettingsDep) -> JSONResponse:
    return JSONResponse(devissuer.jwks(settings), headers={"Cache-Control": "max-age=300"})


DEV_REFUSED = """<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Tally: sign-in refused</title></head>
<body style="font-family: system-ui, sans-serif; max-width: 40rem; margin: 3rem auto"><h1>Sign-in refused</h1>
<p>{reason}</p><p>The development issuer signs in browsers on this machine only. Elsewhere, configure
an OIDC issuer (<code>TALLY_AUTH_ISSUER</code>), or call the API with a token (<code>tally token</code>).
</p></body></html>"""


@router.get("/auth/dev/authorize")
async def dev_authorize(
    request: Request,
    settings: SettingsDep,
    redirect_uri: str = "",
    state: str = "",
    scope: str = "",
    code_challenge: str = "",
    code_challenge_method: str = "",
    response_type: str = "",
    client_id: str = "",
) -> Response:
    """Approve a browser on loopback at once: whoever can reach loopback here could read the key."""
    target = urlsplit(redirect_uri)
    reason = None
    if settings.auth_issuer:
        reason = "The development issuer is off: this API trusts a configured issuer."
    elif not is_loopback(request):
        reason = "The browser is not on this machine."
    elif target.hostname not in ("127.0.0.1", "localhost", "::1") or target.path != "/auth/callback":
        reason = "The redirect_uri is not this machine's /auth/callback."
    elif response_type != "code" or code_challenge_method != "S256" or len(code_challenge) != 43:
        reason = "Only response_type=code with a PKCE S256 code_challenge is taken."
    if reason:
        return HTMLResponse(DEV_REFUSED.format(reason=reason), status_code=403)
    scopes = [s for s in scope.split() if s in devissuer.SCOPES] or ["events:read"]
    key = devissuer.signing_key(settings)
    claims = {
        "typ": "code",
        "aud": client_id,
        "redirect_uri": redirect_uri,
        "challenge": code_challenge,
        "scope": " ".join(scopes),
        "exp": int(time.time()) + CODE_TTL_S,
        "jti": secrets.token_urlsafe(18),
    }
    code = jwt.encode({"alg": "ES256", "kid": key.kid}, claims, key)
    return RedirectResponse(f"{redirect_uri}?{urlencode({'code': code, 'state': state})}", status_code=303)


@router.post("/auth/dev/token")
async def dev_token(request: Request, settings: SettingsDep) -> JSONResponse:
    body = await request.body()
    if len(body) > 16_384:
        return JSONResponse({"error": "invalid_request", "error_description": "body too large"}, status_code=400)
    form = {k: v[0] for k, v in parse_qs(body.decode(errors="replace")).items()}
    grant_type, code, redirect_uri = form.get("grant_type"), form.get("code", ""), form.get("redirect_uri")
    code_verifier, client_id = form.get("code_verifier", ""), form.get("client_id", "")

    def refused(description: str) -> JSONResponse:
        return JSONResponse({"error": "invalid_grant", "error_description": description}, status_code=400)

    if grant_type != "authorization_code":
        return JSONResponse({"error": "unsupported_grant_type"}, status_code=400)
    if not 43 <= len(code_verifier) <= 128:
        return refused("code_verifier: 43 to 128 characters (RFC 7636)")
    try:
        claims = jwt.decode(code, devissuer.public_keys(settings), algorithms=["ES256"]).claims
    except (JoseError, ValueError):
        return refused("the code is not one of this issuer's")
    if claims.get("typ") != "code" or claims.get("exp", 0) < time.time():
        return refused("the code has expired")
    if claims.get("redirect_uri") != redirect_uri or claims.get("aud") != client_id:
        return refused("redirect_uri or client_id differ from the authorization request's")
    if not secrets.compare_digest(claims.get("challenge", ""), _challenge(code_verifier)):
        return refused("the code_verifier does not match the code_challenge")
    if not devissuer.redeem_once(settings, str(claims.get("jti", "")), CODE_TTL_S):
        return refused("the code was used already")
    scopes = claims["scope"].split()
    token = devissuer.mint(settings, scopes, subject="local-browser")
    return JSONResponse(
        {
            "access_token": token,
            "token_type": "Bearer",
            "expires_in": devissuer.DEFAULT_TTL_S,
            "scope": " ".join(scopes),
        },
        headers={"Cache-Control": "no-store"},
    )
