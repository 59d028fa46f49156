"""The development issuer: the token issuer a local stack uses when no OIDC issuer is configured.

Its one signing key (ES256) is generated on first use into the state directory, the directory 0700
and the file 0600, so only the user who runs the stack can sign tokens. `tally token` signs with it
directly; the API serves its public half (GET /auth/dev/jwks.json) and signs browsers in on loopback
(tally.api.routes.auth). The API trusts this issuer only while `auth_issuer` is unset.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import time
from pathlib import Path

from joserfc import jwt
from joserfc.jwk import ECKey, KeySet

from tally.settings import Settings

SCOPES = ("events:write", "events:read", "tally:admin")
KEY_FILE = "dev-issuer.jwk.json"
# A day: long enough for a demo or a benchmark, short enough that a token left in a shell history
# or a CI log is soon worth nothing. `tally token --ttl` shortens it.
DEFAULT_TTL_S = 24 * 3600


def issuer(settings: Settings) -> str:
    """The `iss` of the development issuer's tokens, also the base of its endpoints."""
    return f"http://127.0.0.1:{settings.api_port}/auth/dev"


def private_dir(path: Path) -> Path:
    """`path` created if missing and made 0700: keys and secrets live only in such directories."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    path.chmod(0o700)
    return path


def signing_key(settings: Settings) -> ECKey:
    """The issuer's key, created on first use. Two processes starting together (the API's workers,
    `tally token` beside them) agree on one key: the file is linked into place only if absent."""
    folder = private_dir(settings.auth_dir)
    path = folder / KEY_FILE
    if not path.exists():
        key = ECKey.generate_key("P-256", auto_kid=True)
        tmp = folder / f".{KEY_FILE}.{os.getpid()}.{secrets.token_hex(4)}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(key.as_dict(private=True), f)
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass  # another process won: its key is the one
        finally:
            tmp.unlink()
    return ECKey.import_key(json.loads(path.read_text()))


def redeem_once(settings: Settings, code_id: str, ttl_s: int) -> bool:
    """True the first time an authorization code (by its `jti`) is redeemed, False ever after
    (RFC 6749 4.1.2: a code is used once). Marks are files created exclusively, so the API's workers
    agree without a database; marks older than the codes' lifetime go, their codes having expired."""
    if not re.fullmatch(r"[A-Za-z0-9_-]{16,64}", code_id):
        return False
    folder = private_dir(settings.auth_dir / "codes")
    now = time.time()
    for mark in folder.iterdir():
        try:
            if mark.stat().st_mtime < now - 2 * ttl_s:
                mark.unlink()
        except FileNotFoundError:
            pass  # another worker pruned it first
    try:
        os.close(os.open(folder / code_id, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except FileExistsError:
        return False
    return True


def public_keys(settings: Settings) -> KeySet:
    key = signing_key(settings)
    return KeySet([ECKey.import_key(key.as_dict(private=False))])


def jwks(settings: Settings) -> dict:
    """The key set as served at the issuer's jwks_uri (public halves only)."""
    return public_keys(settings).as_dict(private=False)


def mint(
    settings: Settings,
    scopes: tuple[str, ...] | list[str] = SCOPES,
    ttl_s: int = DEFAULT_TTL_S,
    subject: str = "local",
) -> str:
    """A signed access token of the development issuer for `scopes`."""
    unknown = [s for s in scopes if s not in SCOPES]
    if unknown:
        raise ValueError(f"scope: unknown {', '.join(unknown)}; known: {', '.join(SCOPES)}")
    key = signing_key(settings)
    now = int(time.time())
    claims = {
        "iss": issuer(settings),
        "sub": subject,
        "aud": settings.auth_audience,
        "iat": now,
        "nbf": now,
        "exp": now + ttl_s,
        "scope": " ".join(scopes),
        "jti": secrets.token_urlsafe(12),
    }
    return jwt.encode({"alg": "ES256", "kid": key.kid, "typ": "at+jwt"}, claims, key)


def bearer(settings: Settings, scopes: tuple[str, ...] | list[str] = SCOPES, ttl_s: int = DEFAULT_TTL_S) -> dict:
    """Request headers carrying a development token: for `tally send`, benchmarks and tests. Empty
    when auth is off, so the same clients run against either."""
    if not settings.auth:
        return {}
    return {"Authorization": f"Bearer {mint(settings, scopes, ttl_s)}"}
