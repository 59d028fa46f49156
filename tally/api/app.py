"""The FastAPI application: clients opened once per worker process, routes per resource, the UI."""

from __future__ import annotations

import logging
import time
from contextlib import asynccontextmanager
from pathlib import Path

import psycopg
from cassandra import DriverException
from cassandra.cluster import NoHostAvailable
from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from fastapi.staticfiles import StaticFiles
from psycopg_pool import PoolTimeout
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from starlette_compress import CompressMiddleware

import tally
from tally.api import metrics, ratelimit, rollout
from tally.api.contract import problem_response
from tally.api.problems import (
    ParamError,
    TooCostly,
    param_error_handler,
    problem,
    rate_limited_handler,
    store_unavailable,
    too_costly_handler,
    validation_error_handler,
)
from tally.api.ratelimit import Limits, RateLimited
from tally.api.routes import aggregate, auth, docs, events, filtered_events, named_metrics, ops, ops_panels, quality
from tally.api.security import AdminScope, Guard, ReadScope, WriteScope, auth_error_handler, scope
from tally.api.stores import HllSupport, RawStore, rollup_pool
from tally.auth import devissuer
from tally.auth.apikeys import KeyChecker
from tally.auth.tokens import AuthError, IssuerUnavailable, TokenVerifier
from tally.legacy.forwarder import DualWriter
from tally.legacy.sinks import make_sink
from tally.legacy.store import PostgresLegacyStore
from tally.ops.prometheus import Prometheus, PrometheusUnavailable
from tally.producer import BatchProducer
from tally.semantic.manifest_file import ManifestFile
from tally.settings import Settings, get_settings
from tally.storage.aggregate_cache import FinalDays
from tally.storage.aggregates import TooManyPoints

STATIC = Path(__file__).parent / "static"
log = logging.getLogger("tally.api")
AUTH_RESPONSES = {
    401: problem_response("No credentials, or a token or API key that is not valid (`error` says why).", False),
    403: problem_response("The credentials lack the scope this route needs (`scope` names it).", False),
}
LIMITED = {429: problem_response("This client is past its rate limit; retry after Retry-After.", True)}


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        # Nothing here waits for a store: the API ingests while PostgreSQL or Cassandra is down.
        app.state.settings = settings
        app.state.producer = BatchProducer(settings)
        pool = rollup_pool(settings)
        await pool.open(wait=False)
        app.state.pg = pool
        app.state.pg_has_hll = HllSupport(pool)
        app.state.raw = RawStore(settings)
        app.state.final_days = FinalDays()
        app.state.named_metrics = ManifestFile(settings.semantic_manifest_path)
        app.state.dual_writer = dual_writer(settings)
        app.state.legacy = await legacy_store(settings)
        app.state.prometheus = Prometheus(settings.prometheus_base)
        app.state.limits = Limits(settings)
        app.state.guard = Guard(TokenVerifier(settings), KeyChecker(settings, pool), settings.auth)
        if not settings.auth:
            log.warning("auth is off (TALLY_AUTH=false): anyone who reaches this API can write and read everything")
        elif not settings.auth_issuer:
            devissuer.signing_key(settings)  # created now (0600), not at the first request
        metrics.start()
        try:
            yield
        finally:
            await rollout.stop()
            await app.state.prometheus.close()
            if app.state.dual_writer is not None:
                await app.state.dual_writer.close()
            if app.state.legacy is not None:
                await app.state.legacy.close()
            app.state.producer.close()
            await pool.close()
            app.state.raw.close()

    app = FastAPI(
        title="Tally",
        version=tally.__version__,
        summary="Real-time event aggregation: events in, exact aggregates out within seconds.",
        lifespan=lifespan,
        # /docs is served from vendored assets by routes/docs.py; FastAPI's own pages load them from a CDN.
        docs_url=None,
        redoc_url=None,
        openapi_url="/openapi.json" if settings.auth_docs_open or not settings.auth else None,
    )
    app.add_exception_handler(ParamError, param_error_handler)
    for error in (TooCostly, TooManyPoints):
        app.add_exception_handler(error, too_costly_handler)
    # Handlers are chosen by the most specific class: a cancelled statement is an OperationalError too.
    app.add_exception_handler(psycopg.errors.QueryCanceled, too_costly_handler)
    for error in (psycopg.OperationalError, PoolTimeout):
        app.add_exception_handler(error, store_unavailable("PostgreSQL"))
    for error in (NoHostAvailable, DriverException):
        app.add_exception_handler(error, store_unavailable("Cassandra"))
    app.add_exception_handler(PrometheusUnavailable, store_unavailable("Prometheus"))
    app.add_exception_handler(IssuerUnavailable, store_unavailable("The token issuer"))
    app.add_exception_handler(RequestValidationError, validation_error_handler)
    app.add_exception_handler(AuthError, auth_error_handler)
    app.add_exception_handler(RateLimited, rate_limited_handler)

    app.add_middleware(Observe)
    # Long answers (a 30-day dashboard is megabytes of JSON) go out compressed when the client says
    # it accepts it, zstd first. Level 1 of each: measured on such an answer, zstd 1 takes 2-5 ms and
    # shrinks it 8-12x, while gzip's level 4 took 26 ms where its level 1 takes 10 (BENCHMARKS.md).
    app.add_middleware(CompressMiddleware, zstd_level=1, brotli_quality=1, gzip_level=1)

    # The scope each resource needs, and whether its client's rate limit counts it (queries by the
    # request, once the scope check has named the client; ingest by its events, routes/events.py).
    # /healthz, /readyz, sign-in and (by setting) /docs and /metrics need none (routes/ops.py,
    # routes/docs.py judge theirs).
    read, limited = [ReadScope, ratelimit.QueryLimit], AUTH_RESPONSES | LIMITED
    scoped = {events: ([WriteScope], limited), quality: ([ReadScope], AUTH_RESPONSES)}
    scoped |= {ops_panels: ([AdminScope], AUTH_RESPONSES)}
    scoped |= {module: (read, limited) for module in (aggregate, named_metrics, filtered_events)}
    for module, (needs, responses) in scoped.items():
        app.include_router(module.router, dependencies=needs, responses=responses)
    for module in (ops, docs, auth):
        app.include_router(module.router)
    if app.openapi_url is None:
        docs.protect_schema(app, scope("events:read"))
    routers = [module.router for module in (*scoped, ops, docs, auth)]
    methods = {r.path: r.methods for router in routers for r in router.routes if isinstance(r, APIRoute)}
    app.mount("/", UiFiles(methods, directory=STATIC, html=True), name="ui")
    return app


class Observe:
    """Latency by route and status, and a Server-Timing header that lets clients tell time in Tally
    from time on the wire and in their own code. Plain ASGI: Starlette's BaseHTTPMiddleware runs the
    route in a task of its own and streams the answer through a queue, which cost every request
    (ingest bodies and megabyte answers alike) more than the rest of the middleware stack."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()

        async def timed(message: Message) -> None:
            if message["type"] == "http.response.start":
                took = time.perf_counter() - t0  # the answer is computed: its body follows
                path = getattr(scope.get("route"), "path", "other")
                metrics.LATENCY.labels(path, str(message["status"])).observe(took)
                MutableHeaders(scope=message).append("Server-Timing", f"app;dur={took * 1000:.1f}")
            await send(message)

        await self.app(scope, receive, timed)


def dual_writer(settings: Settings) -> DualWriter | None:
    sink = make_sink(settings)
    if sink is None:
        return None
    writer = DualWriter(
        sink,
        settings.legacy_buffer_events,
        settings.legacy_batch_events,
        settings.legacy_timeout_s,
        settings.legacy_buffer_bytes,
    )
    writer.start()
    return writer


async def legacy_store(settings: Settings) -> PostgresLegacyStore | None:
    """The legacy store the staged rollout reads, opened without waiting for it to answer."""
    if not (settings.legacy_read_share or settings.legacy_shadow):
        return None
    store = PostgresLegacyStore(settings.legacy_dsn, settings.legacy_table, settings.query_timeout_s)
    await store.open()
    return store


class UiFiles(StaticFiles):
    """The browser UI, mounted at / after the API's routes. A request for an API path with a method
    its route does not take falls through to this mount, which would answer 404 or "405, Allow: GET":
    it is answered 405 with the route's own methods instead."""

    def __init__(self, api_methods: dict[str, set[str]], **kwargs):
        super().__init__(**kwargs)
        self.api_methods = {path: {*m, "HEAD"} if "GET" in m else set(m) for path, m in api_methods.items()}

    async def __call__(self, scope, receive, send) -> None:
        allowed = self.api_methods.get(scope.get("path", "")) if scope["type"] == "http" else None
        if allowed:
            allow = ", ".join(sorted(allowed))
            response = problem(405, "Method not allowed", f"{scope['path']} takes {allow}", headers={"Allow": allow})
            await response(scope, receive, send)
            return
        await super().__call__(scope, receive, send)
