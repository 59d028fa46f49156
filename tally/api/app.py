"""The FastAPI application: clients opened once per worker process, routes per resource, the UI."""

from __future__ import annotations

import time
from contextlib import asynccontextmanager
from pathlib import Path

import psycopg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.staticfiles import StaticFiles
from psycopg_pool import AsyncConnectionPool, PoolTimeout

import tally
from tally.api import metrics
from tally.api.problems import (
    ParamError,
    param_error_handler,
    store_unavailable_handler,
    validation_error_handler,
)
from tally.api.routes import aggregate, docs, events, filtered_events, ops
from tally.producer import BatchProducer
from tally.settings import Settings, get_settings
from tally.storage import raw_events
from tally.storage.aggregate_cache import FinalDays

STATIC = Path(__file__).parent / "static"


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        app.state.settings = settings
        app.state.producer = BatchProducer(settings)
        # Connections are checked when taken: after a PostgreSQL restart every pooled one is dead,
        # and unchecked they each failed a request before being dropped.
        pool = AsyncConnectionPool(
            settings.pg_dsn, min_size=1, max_size=8, open=False, check=AsyncConnectionPool.check_connection
        )
        await pool.open(wait=True, timeout=30)
        app.state.pg = pool
        async with pool.connection() as conn:
            row = await (await conn.execute("select 1 from pg_extension where extname = 'hll'")).fetchone()
            app.state.pg_has_hll = row is not None
        cluster = raw_events.cluster(settings)
        session = cluster.connect(settings.cassandra_keyspace)
        app.state.raw = raw_events.RawEventReader(session, shards=settings.kafka_partitions)
        app.state.final_days = FinalDays()
        try:
            yield
        finally:
            app.state.producer.close()
            await pool.close()
            cluster.shutdown()

    app = FastAPI(
        title="Tally",
        version=tally.__version__,
        summary="Real-time event aggregation: events in, exact aggregates out within seconds.",
        lifespan=lifespan,
        # /docs is served from vendored assets by routes/docs.py; FastAPI's own pages load them from a CDN.
        docs_url=None,
        redoc_url=None,
    )
    app.add_exception_handler(ParamError, param_error_handler)
    app.add_exception_handler(psycopg.OperationalError, store_unavailable_handler)
    app.add_exception_handler(PoolTimeout, store_unavailable_handler)
    app.add_exception_handler(RequestValidationError, validation_error_handler)

    @app.middleware("http")
    async def observe(request: Request, call_next):
        t0 = time.perf_counter()
        response = await call_next(request)
        route = request.scope.get("route")
        path = getattr(route, "path", "other")
        took = time.perf_counter() - t0
        metrics.LATENCY.labels(path, str(response.status_code)).observe(took)
        # Lets clients tell time in Tally from time on the wire and in their own code.
        response.headers["Server-Timing"] = f"app;dur={took * 1000:.1f}"
        return response

    for module in (events, aggregate, filtered_events, ops, docs):
        app.include_router(module.router)
    app.mount("/", StaticFiles(directory=STATIC, html=True), name="ui")
    return app
