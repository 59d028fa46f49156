"""Grafana dashboards as code: the panels of tally.ops.panels as dashboard JSON for teams that run
Grafana, built with grafana-foundation-sdk (Grafana's own typed builders, so the JSON has the shape
its dashboard schema gives). Grafana itself is not run here; tests run every panel's PromQL against
the live Prometheus and decode the JSON back through the SDK's models.

    python -m tally.ops.grafana        # rewrites deploy/grafana/dashboards/*.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from grafana_foundation_sdk.builders import dashboard as gd
from grafana_foundation_sdk.builders import prometheus, stat, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.dashboard import DashboardCursorSync, DataSourceRef

from tally.ops.panels import DASHBOARDS, Dashboard, Panel
from tally.settings import REPO_ROOT

OUT = REPO_ROOT / "deploy" / "grafana" / "dashboards"
# Every panel reads the Prometheus the user picks in the dashboard's "datasource" variable.
DATASOURCE = DataSourceRef(type_val="prometheus", uid="${datasource}")
WIDTH = {"timeseries": 12, "stat": 6}
HEIGHT = {"timeseries": 8, "stat": 5}


def _panel(p: Panel):
    builder = (stat.Panel() if p.kind == "stat" else timeseries.Panel()).title(p.title).description(p.description)
    builder = builder.unit(p.unit).datasource(DATASOURCE).height(HEIGHT[p.kind]).span(WIDTH[p.kind])
    if p.kind == "timeseries":
        builder = builder.fill_opacity(10).line_width(1)
    for i, q in enumerate(p.queries):
        target = prometheus.Dataquery().expr(q.expr).legend_format(q.legend or "__auto").ref_id("ABCDEFGH"[i])
        builder = builder.with_target(target.datasource(DATASOURCE))
    return builder


def build(d: Dashboard) -> dict:
    builder = (
        gd.Dashboard(d.title)
        .uid(d.uid)
        .description(d.description)
        .tags(["tally"])
        .refresh("10s")
        .time("now-1h", "now")
        .timezone("utc")
        .tooltip(DashboardCursorSync.CROSSHAIR)
        .with_variable(gd.DatasourceVariable("datasource").label("Prometheus").type("prometheus"))
    )
    for p in d.panels:
        builder = builder.with_panel(_panel(p))
    return json.loads(json.dumps(builder.build(), cls=JSONEncoder))


def write(out: Path = OUT) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for d in DASHBOARDS:
        path = out / f"{d.uid}.json"
        path.write_text(json.dumps(build(d), indent=2, sort_keys=True) + "\n")
        written.append(path)
    return written


if __name__ == "__main__":
    for path in write(Path(sys.argv[1]) if len(sys.argv) > 1 else OUT):
        print(path)
