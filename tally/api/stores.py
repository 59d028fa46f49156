"""The API's connections to the stores, opened so that none of them has to be up for the API to
start: ingest needs only Kafka; aggregate queries need PostgreSQL, raw-event queries Cassandra.
A store that is down makes its own queries answer 503 (tally.api.problems) and `/readyz` say so."""

from __future__ import annotations

import asyncio
import threading

from psycopg_pool import AsyncConnectionPool

from tally.settings import Settings
from tally.storage import raw_events
from tally.storage.raw_reader import RawEventReader

# How long a request waits for a PostgreSQL connection before it is answered 503.
POOL_WAIT_S = 5.0


def rollup_pool(settings: Settings) -> AsyncConnectionPool:
    """Connections are checked when taken: after a PostgreSQL restart every pooled one is dead,
    and unchecked they each failed a request before being dropped. A statement that runs longer
    than the query timeout is cancelled (tally.api.problems answers it 422 with a hint)."""
    return AsyncConnectionPool(
        settings.pg_dsn,
        min_size=1,
        max_size=8,
        open=False,
        timeout=POOL_WAIT_S,
        check=AsyncConnectionPool.check_connection,
        kwargs={"options": f"-c statement_timeout={int(settings.query_timeout_s * 1000)}"},
    )


class HllSupport:
    """Whether PostgreSQL has the `hll` extension (sketches then merge in SQL), asked once it answers."""

    def __init__(self, pool: AsyncConnectionPool):
        self.pool = pool
        self.known: bool | None = None

    async def __call__(self) -> bool:
        if self.known is None:
            async with self.pool.connection() as conn:
                row = await (await conn.execute("select 1 from pg_extension where extname = 'hll'")).fetchone()
            self.known = row is not None
        return self.known


class RawStore:
    """Cassandra for raw-event reads, connected on first use (again if the first try failed); the
    driver itself reconnects to a node that comes back. Called from the thread pool."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self._cluster = None
        self._reader: RawEventReader | None = None
        self._lock = threading.Lock()

    def reader(self) -> RawEventReader:
        with self._lock:
            if self._reader is None:
                cluster = raw_events.cluster(self.settings)
                try:
                    session = cluster.connect(self.settings.cassandra_keyspace)
                except Exception:
                    cluster.shutdown()
                    raise
                self._cluster = cluster
                self._reader = RawEventReader(session, shards=self.settings.kafka_partitions)
            return self._reader

    def check(self) -> None:
        self.reader().session.execute("select release_version from system.local", timeout=2)

    def close(self) -> None:
        if self._cluster is not None:
            self._cluster.shutdown()


async def readiness(pool: AsyncConnectionPool, raw: RawStore, producer) -> dict[str, str]:
    """Each store's state, "ok" or the error, checked at once."""

    async def postgres() -> None:
        async with pool.connection(timeout=2) as conn:
            await conn.execute("select 1")

    async def cassandra() -> None:
        await asyncio.to_thread(raw.check)

    checks = {"kafka": producer.check(), "postgres": postgres(), "cassandra": cassandra()}
    results = await asyncio.gather(*(asyncio.wait_for(c, 3) for c in checks.values()), return_exceptions=True)
    return {
        name: "ok" if not isinstance(r, BaseException) else f"error: {r or type(r).__name__}"
        for name, r in zip(checks, results, strict=True)
    }
