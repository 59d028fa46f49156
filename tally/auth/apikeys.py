"""API keys for machine clients: `tally apikey create|list|revoke`, checked by the API.

A key is `tally_<id>_<secret>`, 32 random bytes of secret, shown once at creation. PostgreSQL keeps
only the secret's SHA-256 (a slow password hash buys nothing for 256 random bits), the key's name,
scopes and creation and revocation times. The API checks a key by its id and compares hashes in
constant time; it remembers a checked key for `auth_key_cache_s`, so a revocation takes effect
within that long, and while PostgreSQL is down a key checked within the last hour keeps working
(ingest does not need PostgreSQL and must not stop with it).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from dataclasses import dataclass
from datetime import datetime

import psycopg
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from tally.auth.devissuer import SCOPES
from tally.auth.tokens import Principal, invalid
from tally.settings import Settings

TABLE = "tally_api_keys"
KEY = re.compile(r"^tally_([a-z0-9]{12})_([A-Za-z0-9_-]{43})$")
STALE_OK_S = 3600.0

DDL = f"""
create table if not exists {TABLE} (
    id text primary key,
    name text not null,
    secret_sha256 bytea not null,
    scopes text[] not null,
    created_at timestamptz not null default now(),
    revoked_at timestamptz
)
"""


@dataclass(frozen=True)
class KeyInfo:
    id: str
    name: str
    scopes: tuple[str, ...]
    created_at: datetime
    revoked_at: datetime | None


def _digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


def create(settings: Settings, name: str, scopes: list[str]) -> str:
    """Store a new key and return it, the only time it is ever shown."""
    unknown = [s for s in scopes if s not in SCOPES]
    if unknown or not scopes:
        raise ValueError(
            f"scope: {'unknown ' + ', '.join(unknown) if unknown else 'at least one'}; known: {', '.join(SCOPES)}"
        )
    if not name.strip() or len(name) > 200:
        raise ValueError("name: 1 to 200 characters")
    key_id = "".join(secrets.choice("abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(12))
    secret = secrets.token_urlsafe(32)
    with psycopg.connect(settings.pg_dsn, autocommit=True) as conn:
        conn.execute(DDL)
        conn.execute(
            f"insert into {TABLE} (id, name, secret_sha256, scopes) values (%s, %s, %s, %s)",
            (key_id, name.strip(), _digest(secret), sorted(set(scopes))),
        )
    return f"tally_{key_id}_{secret}"


def list_keys(settings: Settings) -> list[KeyInfo]:
    with psycopg.connect(settings.pg_dsn, autocommit=True) as conn:
        conn.execute(DDL)
        rows = conn.execute(
            f"select id, name, scopes, created_at, revoked_at from {TABLE} order by created_at"
        ).fetchall()
    return [KeyInfo(r[0], r[1], tuple(r[2]), r[3], r[4]) for r in rows]


def revoke(settings: Settings, key_id: str) -> bool:
    """Revoke by id (the part after `tally_` that `list` shows); False if there is no such live key."""
    with psycopg.connect(settings.pg_dsn, autocommit=True) as conn:
        conn.execute(DDL)
        cur = conn.execute(f"update {TABLE} set revoked_at = now() where id = %s and revoked_at is null", (key_id,))
        return cur.rowcount == 1


class KeyChecker:
    """The API's side: a presented key to the principal it stands for, or a 401."""

    def __init__(self, settings: Settings, pool: AsyncConnectionPool):
        self.ttl = settings.auth_key_cache_s
        self.pool = pool
        self.checked: dict[str, tuple[float, Principal | None]] = {}

    async def check(self, presented: str) -> Principal:
        m = KEY.match(presented)
        if m is None:
            raise invalid("not a Tally API key (tally_<id>_<secret>) nor a JWT")
        key_id, secret = m.groups()
        now = time.monotonic()
        hit = self.checked.get(presented)
        if hit is not None and now - hit[0] < self.ttl:
            return _or_refuse(hit[1])
        try:
            async with self.pool.connection() as conn:
                row = await (
                    await conn.execute(
                        f"select name, secret_sha256, scopes, revoked_at from {TABLE} where id = %s", (key_id,)
                    )
                ).fetchone()
        except psycopg.errors.UndefinedTable:
            row = None
        except (psycopg.OperationalError, PoolTimeout, OSError, TimeoutError) as e:
            if hit is not None and now - hit[0] < STALE_OK_S:
                return _or_refuse(hit[1])
            raise e
        principal = None
        if row is not None and row[3] is None and hmac.compare_digest(bytes(row[1]), _digest(secret)):
            principal = Principal(f"apikey:{row[0]}", frozenset(row[2]), "apikey")
        if len(self.checked) > 10_000:
            self.checked.clear()  # made-up keys must not grow this without bound
        self.checked[presented] = (now, principal)
        return _or_refuse(principal)


def _or_refuse(principal: Principal | None) -> Principal:
    if principal is None:
        raise invalid("the API key is unknown or revoked")
    return principal
