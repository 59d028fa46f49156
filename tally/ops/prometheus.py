"""Reading Prometheus' HTTP API for the /ops page and `tally status`: only the panels' own PromQL
(tally.ops.panels) is ever sent, never a query from a client."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import httpx

from tally.ops.panels import Panel

# The /ops charts draw at most this many points per series, whatever the range.
MAX_POINTS = 240


class PrometheusUnavailable(RuntimeError):
    """Prometheus did not answer, or answered with an error; the message says which."""


@dataclass
class Series:
    name: str  # the query's legend with the series' labels filled in
    points: list[tuple[float, float | None]]  # (epoch s, value); None where Prometheus had no value


def legend(template: str, labels: dict[str, str], fallback: str) -> str:
    """Grafana's legendFormat, filled in ("partition {{partition}}" -> "partition 3")."""
    if not template:
        return fallback
    out = template
    for key, value in labels.items():
        out = out.replace("{{" + key + "}}", value)
    return out


class Prometheus:
    def __init__(self, base_url: str, timeout_s: float = 5.0):
        self.client = httpx.AsyncClient(base_url=base_url, timeout=timeout_s)

    async def close(self) -> None:
        await self.client.aclose()

    async def _get(self, path: str, params: dict | None = None) -> dict:
        try:
            r = await self.client.get(path, params=params)
            body = r.json()
        except (httpx.HTTPError, ValueError) as e:
            raise PrometheusUnavailable(f"Prometheus at {self.client.base_url} did not answer: {e}") from e
        if body.get("status") != "success":
            raise PrometheusUnavailable(f"Prometheus refused {path}: {body.get('error', r.status_code)}")
        return body["data"]

    async def panel_range(self, panel: Panel, minutes: int) -> list[Series]:
        end = time.time()
        start = end - minutes * 60
        step = max(5, math.ceil(minutes * 60 / MAX_POINTS))
        out: list[Series] = []
        for q in panel.queries:
            data = await self._get("/api/v1/query_range", {"query": q.expr, "start": start, "end": end, "step": step})
            for r in data["result"]:
                values = {round(float(t), 3): _number(v) for t, v in r["values"]}
                points = [(t, values.get(t)) for t in _steps(end, step, values)]
                out.append(Series(legend(q.legend, r["metric"], q.expr), points))
        return out

    async def panel_now(self, panel: Panel) -> list[Series]:
        out: list[Series] = []
        for q in panel.queries:
            for r in await self.instant(q.expr):
                t, v = r["value"]
                out.append(Series(legend(q.legend, r["metric"], q.expr), [(float(t), _number(v))]))
        return out

    async def instant(self, expr: str) -> list[dict]:
        """The series of one instant query, as Prometheus gives them (metric, value)."""
        return (await self._get("/api/v1/query", {"query": expr}))["result"]

    async def value(self, expr: str) -> float | None:
        """The value of a query that returns one series; None when it returns none."""
        result = await self.instant(expr)
        return _number(result[0]["value"][1]) if result else None

    async def firing(self) -> list[dict]:
        """Alerts firing now: name, severity, summary, labels and since when."""
        data = await self._get("/api/v1/alerts")
        return [a for a in data["alerts"] if a.get("state") == "firing"]


def _number(v: str) -> float | None:
    x = float(v)
    return None if math.isnan(x) or math.isinf(x) else x


def _steps(end: float, step: int, values: dict[float, float | None]) -> list[float]:
    """Every step from the first value on, so gaps stay gaps (None) on the chart."""
    if not values:
        return []
    first = min(values)
    return [round(first + i * step, 3) for i in range(int((end - first) // step) + 1)]
