"""GET /api/metrics: the named metrics analysts define in dbt_project/, which /api/aggregate computes
beside the built-in ones."""

from __future__ import annotations

from fastapi import APIRouter

from tally.api.deps import NamedMetricsDep
from tally.api.models import MeasureOut, MetricInput, MetricsCatalog, NamedMetricOut, RefusedMetric
from tally.semantic.catalog import Input, NamedMetric
from tally.storage.aggregates import METRICS

router = APIRouter(tags=["metrics"])


@router.get(
    "/api/metrics",
    response_model=MetricsCatalog,
    response_model_exclude_none=True,
    summary="Named metrics",
    description="The metrics defined in dbt_project/ (MetricFlow's semantic layer) that `/api/aggregate`"
    " computes from the rollups: pass their names in `metrics=`, beside the built-in ones. Those Tally"
    " cannot compute exactly are listed under `refused` with the reason. Read again within seconds of"
    " `make metrics`.",
)
async def get_metrics(named: NamedMetricsDep) -> MetricsCatalog:
    catalog = named.current()
    return MetricsCatalog(
        builtin=list(METRICS),
        metrics=[_out(m) for m in catalog.metrics.values()],
        refused=[RefusedMetric(name=n, reason=why) for n, why in catalog.refused.items()],
        loaded_at=named.loaded_at,
        problem=named.problem,
    )


def _out(m: NamedMetric) -> NamedMetricOut:
    return NamedMetricOut(
        name=m.name,
        label=m.label,
        description=m.description,
        type=m.type,
        filter=m.filter,
        measure=MeasureOut(**m.measure) if m.measure else None,
        numerator=_input(m.numerator),
        denominator=_input(m.denominator),
        expr=m.expr,
        inputs=[_input(i) for i in m.inputs] if m.type == "derived" else None,
    )


def _input(i: Input | None) -> MetricInput | None:
    return None if i is None else MetricInput(metric=i.metric, alias=i.alias, filter=i.filter)
