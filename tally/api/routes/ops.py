"""Health and metrics for operators and Prometheus."""

from __future__ import annotations

import os

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest, multiprocess

from tally.api.deps import PgPoolDep
from tally.api.models import Health

router = APIRouter(tags=["operations"])


@router.get("/healthz", response_model=Health, summary="Liveness and database reachability")
async def healthz(pg: PgPoolDep) -> Health:
    checks = {}
    try:
        async with pg.connection(timeout=2) as conn:
            await conn.execute("select 1")
        checks["postgres"] = "ok"
    except Exception as e:  # reported, not raised: the API still ingests while PostgreSQL is down
        checks["postgres"] = f"error: {e}"
    return Health(status="ok", checks=checks)


@router.get("/metrics", response_class=Response, summary="Prometheus metrics of every API worker")
def prometheus_metrics() -> Response:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        data = generate_latest(registry)
    else:
        data = generate_latest()
    return Response(data, media_type=CONTENT_TYPE_LATEST)
