"""Where dual write sends events: the legacy system's own ingest over HTTP, or its PostgreSQL table.

A sink's `send` takes a batch of events (one JSON document each, as the API accepted them) and
returns once the legacy side has them. It raises `Unreachable` when the legacy side cannot be
reached or says it is unavailable (the forwarder waits for it), `Refused` when it will never take
the batch (the forwarder looks for the events it refuses and drops those), anything else when it
failed this time. Another legacy system plugs in by implementing `LegacySink`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import httpx
import psycopg
from psycopg import sql

from tally.legacy import table
from tally.settings import Settings

# Answers that say the legacy side is busy or away, not that anything is wrong with the batch.
UNAVAILABLE_STATUS = frozenset({408, 425, 429, 502, 503, 504})


class Refused(Exception):
    """The legacy side refused the batch for good (a 4xx, or rows its table cannot hold)."""


class Unreachable(Exception):
    """The legacy side cannot be reached, or answers that it is unavailable: wait for it."""


class LegacySink(Protocol):
    name: str

    async def send(self, values: Sequence[bytes]) -> None: ...

    async def close(self) -> None: ...


class HttpSink:
    """POSTs each batch as NDJSON to the legacy system's ingest URL."""

    name = "http"

    def __init__(self, url: str, timeout_s: float):
        self.url = url
        self.client = httpx.AsyncClient(timeout=timeout_s)

    async def send(self, values: Sequence[bytes]) -> None:
        body = b"\n".join(values) + b"\n"
        try:
            response = await self.client.post(self.url, content=body, headers={"content-type": "application/x-ndjson"})
        except httpx.TransportError as e:
            if isinstance(e, httpx.ConnectError | httpx.ConnectTimeout):
                raise Unreachable(f"{self.url}: {e or type(e).__name__}") from e
            raise
        if response.is_success:
            return
        reason = f"{self.url} answered {response.status_code}: {response.text[:200]}"
        if response.status_code in UNAVAILABLE_STATUS:
            raise Unreachable(reason)
        if response.status_code < 500:
            raise Refused(reason)
        raise RuntimeError(reason)

    async def close(self) -> None:
        await self.client.aclose()


class PostgresSink:
    """Inserts each batch into the legacy table (created if missing), an event_id stored once."""

    name = "postgres"

    def __init__(self, dsn: str, table_name: str, timeout_s: float):
        self.dsn = dsn
        self.table = table_name
        self.timeout_s = timeout_s
        self.conn: psycopg.AsyncConnection | None = None

    async def _connect(self) -> psycopg.AsyncConnection:
        if self.conn is None or self.conn.closed:
            try:
                conn = await psycopg.AsyncConnection.connect(
                    self.dsn,
                    autocommit=True,
                    connect_timeout=max(1, int(self.timeout_s)),
                    options=f"-c statement_timeout={int(self.timeout_s * 1000)}",
                )
            except psycopg.OperationalError as e:
                raise Unreachable(str(e).strip().splitlines()[0] if str(e).strip() else "cannot connect") from e
            try:
                # Created only where missing: a legacy system's own table may not let Tally create anything.
                found = await (await conn.execute("select to_regclass(%s)", (self.table,))).fetchone()
                if found[0] is None:
                    for statement in table.create(self.table):
                        await conn.execute(statement)
                # The staging tables live as long as the session: created once here, not per batch.
                for stage in table.STAGES.values():
                    await conn.execute(sql.SQL(stage).format(t=sql.Identifier(self.table)))
            except BaseException:
                await conn.close()
                raise
            self.conn = conn
        return self.conn

    async def send(self, values: Sequence[bytes]) -> None:
        try:
            try:
                await self._insert(values, table.JSON_STAGE, self._copy_documents)
            except psycopg.errors.DataError:
                # PostgreSQL read a field differently from Tally's schema (a timestamp form it does not
                # take): the batch again, parsed here, as Tally read it.
                await self._insert(values, table.ROW_STAGE, self._copy_rows)
        except psycopg.errors.DataError as e:
            raise Refused(f"{self.table} refused the batch: {e}") from e
        except psycopg.Error as e:
            # A broken connection is opened again on the next try.
            if self.conn is not None and self.conn.broken:
                await self.conn.close()
                raise Unreachable(f"lost the connection to the legacy database: {e}") from e
            raise

    async def _insert(self, values: Sequence[bytes], stage: str, copy_in) -> None:
        conn = await self._connect()
        t = sql.Identifier(self.table)
        async with conn.transaction():
            await copy_in(conn, values)
            await conn.execute(sql.SQL(table.INSERTS[stage]).format(t=t))

    @staticmethod
    async def _copy_documents(conn: psycopg.AsyncConnection, values: Sequence[bytes]) -> None:
        """The events as they came, one write for the batch: PostgreSQL reads their fields, so the
        API's workers spend nothing per event on the legacy side."""
        async with conn.cursor().copy(table.COPY_DOCUMENTS) as copy:
            await copy.write(b"\n".join(values) + b"\n")

    @staticmethod
    async def _copy_rows(conn: psycopg.AsyncConnection, values: Sequence[bytes]) -> None:
        async with conn.cursor().copy(table.COPY_ROWS) as copy:
            for row in table.rows(values):
                await copy.write_row(row)

    async def close(self) -> None:
        if self.conn is not None:
            await self.conn.close()


def make_sink(settings: Settings) -> LegacySink | None:
    if settings.legacy_sink == "http":
        return HttpSink(settings.legacy_url, settings.legacy_timeout_s)
    if settings.legacy_sink == "postgres":
        return PostgresSink(settings.legacy_dsn, settings.legacy_table, settings.legacy_timeout_s)
    return None
