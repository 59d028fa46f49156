"""The operators' panels (tally.ops.panels): well-formed PromQL, unique ids, legends filled in."""

from __future__ import annotations

import shutil
import subprocess

import yaml

from tally.ops.figures import FIGURES
from tally.ops.panels import DASHBOARDS, ops_panels, panels
from tally.ops.prometheus import legend


def test_every_query_is_promql_that_promtool_accepts(tmp_path):
    """promtool checks the syntax of recording rules: every panel's and figure's query becomes one."""
    exprs = [q.expr for d in DASHBOARDS for p in d.panels for q in p.queries] + [f[3] for f in FIGURES]
    rules = {
        "groups": [{"name": "panels", "rules": [{"record": f"panel:q{i}", "expr": e} for i, e in enumerate(exprs)]}]
    }
    path = tmp_path / "panels.yml"
    path.write_text(yaml.safe_dump(rules))
    promtool = shutil.which("promtool")
    assert promtool, "promtool comes with the prometheus package"
    out = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    # The check is real: a broken query fails it.
    path.write_text(
        yaml.safe_dump({"groups": [{"name": "x", "rules": [{"record": "a:b", "expr": "sum(rate(x[1m])"}]}]})
    )
    assert subprocess.run([promtool, "check", "rules", str(path)], capture_output=True).returncode != 0


def test_panel_ids_are_unique_and_the_ops_page_has_what_the_issue_asks():
    ids = [p.id for d in DASHBOARDS for p in d.panels]
    assert len(set(ids)) == len(panels())
    same_id = {}
    for d in DASHBOARDS:
        for p in d.panels:
            assert same_id.setdefault(p.id, p) is p, f"two panels named {p.id}"
    assert {d.uid for d in DASHBOARDS} == {"tally-overview", "tally-pipeline", "tally-storage", "tally-services"}
    page = {p.id for p in ops_panels()}
    assert {"events", "freshness", "watermark_lag", "consumer_lag", "side_streams", "flush_seconds"} <= page
    assert {"query_seconds", "alerts_firing"} <= page
    for p in panels().values():
        assert p.kind in ("timeseries", "stat") and p.unit in ("ops", "s", "bytes", "short", "percentunit")


def test_legends_are_filled_from_the_series_labels():
    assert legend("partition {{partition}}", {"partition": "3", "job": "x"}, "q") == "partition 3"
    assert legend("{{store}} {{kind}}", {"store": "cassandra", "kind": "transient"}, "q") == "cassandra transient"
    assert legend("", {"a": "b"}, "sum(x)") == "sum(x)"
