"""The operations page's data: the panels of tally.ops.panels and the alerts firing, read from
Prometheus by the API so that the browser never needs Prometheus' port. A client names a panel; the
PromQL is the panel's own."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request

from tally.api.contract import problem_response
from tally.api.models import OpsAlert, OpsPanel, OpsPanelData, OpsSeries
from tally.api.problems import ParamError
from tally.ops.panels import Panel, ops_panels, panels
from tally.ops.prometheus import Prometheus

router = APIRouter(tags=["operations"])
_PANELS = panels()


def _prometheus(request: Request) -> Prometheus:
    return request.app.state.prometheus


def _model(p: Panel) -> OpsPanel:
    return OpsPanel(id=p.id, title=p.title, description=p.description, unit=p.unit, kind=p.kind)


@router.get("/api/ops/panels", response_model=list[OpsPanel], summary="The panels of the operations page")
async def list_panels() -> list[OpsPanel]:
    return [_model(p) for p in ops_panels()]


@router.get(
    "/api/ops/series",
    response_model=OpsPanelData,
    summary="One panel's series over the last minutes",
    responses={
        422: problem_response("No panel has this id (the message lists those that do), or minutes is out of range."),
        503: problem_response("Prometheus does not answer; retry after Retry-After.", True),
    },
)
async def panel_data(
    request: Request,
    panel: Annotated[str, Query(max_length=64, description="A panel's id, from /api/ops/panels.")],
    minutes: Annotated[int, Query(ge=1, le=1440, description="How far back, up to a day.")] = 15,
) -> OpsPanelData:
    # A query parameter, not a path segment: whatever a client sends, the answer is this route's.
    found = _PANELS.get(panel)
    if found is None:
        raise ParamError("panel", f"no panel {panel!r}; known: {', '.join(sorted(_PANELS))}")
    prom = _prometheus(request)
    series = await (prom.panel_now(found) if found.kind == "stat" else prom.panel_range(found, minutes))
    return OpsPanelData(
        panel=_model(found), minutes=minutes, series=[OpsSeries(name=s.name, points=s.points) for s in series]
    )


@router.get(
    "/api/ops/alerts",
    response_model=list[OpsAlert],
    summary="Alerts firing now",
    responses={503: problem_response("Prometheus does not answer; retry after Retry-After.", True)},
)
async def firing_alerts(request: Request) -> list[OpsAlert]:
    alerts = await _prometheus(request).firing()
    return [
        OpsAlert(
            name=a["labels"].get("alertname", ""),
            severity=a["labels"].get("severity", ""),
            summary=a.get("annotations", {}).get("summary", ""),
            since=a.get("activeAt"),
            labels={k: v for k, v in a["labels"].items() if k not in ("alertname", "severity")},
        )
        for a in alerts
    ]
