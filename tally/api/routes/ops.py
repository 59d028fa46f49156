"""Health and metrics for operators and Prometheus."""

from __future__ import annotations

import os

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest, multiprocess

from tally.api.deps import PgPoolDep, ProducerDep, RawStoreDep
from tally.api.models import Health
from tally.api.security import authorize, is_loopback
from tally.api.stores import readiness

router = APIRouter(tags=["operations"])


@router.get("/healthz", response_model=Health, summary="Liveness: the process answers")
async def healthz() -> Health:
    """For a supervisor or Kubernetes' liveness probe: no store is asked, so a store outage never
    gets the API restarted (it still ingests while PostgreSQL or Cassandra is down)."""
    return Health(status="ok", checks={})


@router.get(
    "/readyz",
    response_model=Health,
    summary="Readiness: Kafka, PostgreSQL and Cassandra answer",
    responses={503: {"description": "A store does not answer; `checks` says which and why.", "model": Health}},
)
async def readyz(pg: PgPoolDep, raw: RawStoreDep, producer: ProducerDep) -> JSONResponse:
    checks = await readiness(pg, raw, producer)
    ready = all(v == "ok" for v in checks.values())
    body = Health(status="ready" if ready else "not ready", checks=checks)
    return JSONResponse(body.model_dump(), status_code=200 if ready else 503)


async def metrics_access(request: Request) -> None:
    """TALLY_AUTH_METRICS: loopback (default: open to Prometheus beside the API, a token with
    tally:admin from elsewhere), open, or token."""
    settings = request.app.state.settings
    if not settings.auth or settings.auth_metrics == "open":
        return
    if settings.auth_metrics == "loopback" and is_loopback(request):
        return
    await authorize(request, "tally:admin")


@router.get(
    "/metrics",
    dependencies=[Depends(metrics_access)],
    response_class=Response,
    summary="Prometheus metrics of every API worker",
    responses={
        200: {"description": "Prometheus' text format.", "content": {"text/plain": {"schema": {"type": "string"}}}}
    },
)
def prometheus_metrics() -> Response:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        data = generate_latest(registry)
    else:
        data = generate_latest()
    return Response(data, media_type=CONTENT_TYPE_LATEST)
