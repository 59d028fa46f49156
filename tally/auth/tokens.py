"""Bearer tokens checked: signature by the trusted issuer's key, a fixed list of algorithms, and the
claims `exp`, `iat`, `iss`, `aud` (and `nbf` when present) within a small clock skew.

Keys come only from the configured issuer's key set (or the development issuer's file), never from
the token: a `jwk`, `jku` or `x5u` header is not read, and a `kid` the set lacks makes the set be
fetched again at most once a minute, so a stream of made-up kids cannot turn the API into a client
hammering the issuer.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from dataclasses import dataclass

import httpx
from joserfc import jws, jwt
from joserfc.errors import (
    BadSignatureError,
    ExpiredTokenError,
    InvalidClaimError,
    JoseError,
    MissingClaimError,
)
from joserfc.jwk import KeySet

from tally.auth import devissuer
from tally.settings import Settings

REFETCH_S = 60.0  # an unknown kid fetches the key set again at most this often
CACHE_TOKENS = 4096  # verified tokens remembered per worker (until each expires)


class IssuerUnavailable(Exception):
    """The configured issuer's key set cannot be fetched: a 503, not a refusal of the token."""


class AuthError(Exception):
    """Answered 401 (no or bad credentials) or 403 (a scope is missing), with an RFC 6750 error code."""

    def __init__(self, status: int, code: str, description: str, scope: str | None = None):
        super().__init__(description)
        self.status = status
        self.code = code
        self.description = description
        self.scope = scope


@dataclass(frozen=True)
class Principal:
    """Who is calling: a token's subject or an API key's name, with the scopes granted."""

    subject: str
    scopes: frozenset[str]
    via: str  # "token", "cookie", "apikey" or "open" (auth off)


def invalid(description: str) -> AuthError:
    return AuthError(401, "invalid_token", description)


class KeySource:
    """The trusted issuer's public keys: the development issuer's file, or a JWKS URL (given, or
    the `jwks_uri` of the issuer's discovery document), cached and refreshed on an unknown kid."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.keys: KeySet | None = None
        self.fetched_at = float("-inf")
        self.lock = asyncio.Lock()

    async def get(self, kid: str | None) -> KeySet:
        if self.keys is not None and (kid is None or _has(self.keys, kid)):
            return self.keys
        async with self.lock:
            if self.keys is not None and (kid is None or _has(self.keys, kid)):
                return self.keys
            if time.monotonic() - self.fetched_at >= REFETCH_S or self.keys is None:
                self.fetched_at = time.monotonic()
                self.keys = await self._load()
            return self.keys

    async def _load(self) -> KeySet:
        s = self.settings
        if not s.auth_issuer:
            return devissuer.public_keys(s)
        try:
            async with httpx.AsyncClient(timeout=5.0, follow_redirects=False) as client:
                url = s.auth_jwks_url or (await discover(client, s.auth_issuer))["jwks_uri"]
                r = await client.get(url)
                r.raise_for_status()
                # Only public keys are taken, whatever else the document holds.
                return KeySet.import_key_set({"keys": [k for k in r.json()["keys"] if "d" not in k]})
        except (httpx.HTTPError, ValueError, KeyError, TypeError, JoseError) as e:
            if self.keys is not None:
                return self.keys  # the keys known so far keep serving through an issuer's outage
            raise IssuerUnavailable(f"{type(e).__name__}: {e}") from e


async def discover(client: httpx.AsyncClient, issuer: str) -> dict:
    """The issuer's OpenID Connect discovery document (its endpoints and jwks_uri)."""
    r = await client.get(issuer.rstrip("/") + "/.well-known/openid-configuration")
    r.raise_for_status()
    return r.json()


def _has(keys: KeySet, kid: str) -> bool:
    return any(k.kid == kid for k in keys.keys)


class TokenVerifier:
    def __init__(self, settings: Settings):
        self.settings = settings
        self.issuer = settings.auth_issuer or devissuer.issuer(settings)
        self.source = KeySource(settings)
        self.claims = jwt.JWTClaimsRegistry(
            leeway=settings.auth_leeway_s,
            iss={"essential": True, "value": self.issuer},
            aud={"essential": True, "value": settings.auth_audience},
            exp={"essential": True},
            iat={"essential": True},
        )
        self.verified: OrderedDict[str, tuple[float, Principal]] = OrderedDict()

    async def verify(self, token: str, via: str = "token") -> Principal:
        if len(token) > self.settings.auth_max_token_bytes:
            raise invalid(f"the token is longer than {self.settings.auth_max_token_bytes} bytes")
        hit = self.verified.get(token)
        if hit is not None and hit[0] > time.time():
            return hit[1] if hit[1].via == via else Principal(hit[1].subject, hit[1].scopes, via)
        try:
            header = jws.extract_compact(token.encode()).protected
        except (JoseError, ValueError, UnicodeError) as e:
            raise invalid(f"the token cannot be read ({_reason(e)})") from None
        alg = header.get("alg")
        if alg not in self.settings.auth_algorithms:
            raise invalid(f"algorithm {alg!r} is not accepted; accepted: {', '.join(self.settings.auth_algorithms)}")
        kid = header.get("kid")
        keys = await self.source.get(kid if isinstance(kid, str) else None)
        if isinstance(kid, str) and not _has(keys, kid):
            raise invalid("the token was signed with a key the issuer does not publish (unknown kid)")
        try:
            decoded = jwt.decode(token, keys, algorithms=self.settings.auth_algorithms)
            self.claims.validate(decoded.claims)
        except ExpiredTokenError:
            raise invalid("the token has expired") from None
        except MissingClaimError as e:
            raise invalid(f"the token lacks a required claim: {e.description}") from None
        except InvalidClaimError as e:
            raise invalid(_claim_problem(e.description)) from None
        except BadSignatureError:
            raise invalid("the token's signature does not match its content") from None
        except (JoseError, ValueError, TypeError) as e:
            raise invalid(f"the token was refused ({_reason(e)})") from None
        claims = decoded.claims
        if not isinstance(claims.get("sub", ""), str) or not isinstance(claims["exp"], int | float):
            raise invalid("the token's sub or exp has the wrong type")
        principal = Principal(str(claims.get("sub") or "unknown"), _scopes(claims), via)
        self._remember(token, float(claims["exp"]), principal)
        return principal

    def _remember(self, token: str, exp: float, principal: Principal) -> None:
        self.verified[token] = (exp, principal)
        if len(self.verified) > CACHE_TOKENS:
            self.verified.popitem(last=False)


def _scopes(claims: dict) -> frozenset[str]:
    # RFC 9068's space-separated `scope`; some issuers send a list in `scp` instead.
    scope = claims.get("scope")
    if isinstance(scope, str):
        return frozenset(scope.split())
    scp = claims.get("scp")
    if isinstance(scp, list):
        return frozenset(s for s in scp if isinstance(s, str))
    return frozenset()


def _claim_problem(description: str) -> str:
    if "'iss'" in description:
        return "the token is not from the trusted issuer (iss)"
    if "'aud'" in description:
        return "the token is not for this API (aud)"
    return f"the token's claims are refused: {description}"


def _reason(e: Exception) -> str:
    text = getattr(e, "description", None) or str(e) or type(e).__name__
    return text[:200]
