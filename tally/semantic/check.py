"""`make metrics` (`tally metrics`): check the metric definitions of dbt_project/ and, if they pass,
hand them to the API, which serves them within seconds.

1. `dbt parse` into a scratch target: a project that does not parse changes nothing.
2. MetricFlow's own validations, then every metric compiled to SQL by MetricFlow (some mistakes only
   show there): its message, word for word, if it refuses.
3. Tally's reading of them (tally.semantic.catalog): a metric that needs what the rollups do not hold
   is refused with the reason.
4. Only then target/semantic_manifest.json (and manifest.json) are replaced, each in one rename, so
   the API never reads a half-written file nor a set that failed a check.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from tally.semantic.catalog import ManifestError, load
from tally.settings import Settings
from tally.stack.dbt import parse_dbt_project
from tally.stack.service import StackError

# Any grouping compiles every kind of metric; this one is what /api/aggregate asks for most.
GROUP_BY = ["metric_time__minute", "event__event_type", "event__source"]


@dataclass
class Outcome:
    problems: list[str] = field(default_factory=list)
    served: list[str] = field(default_factory=list)
    published: bool = False


def check(settings: Settings, publish: bool = True) -> Outcome:
    out = Outcome()
    target = settings.semantic_manifest_path.parent
    target.mkdir(parents=True, exist_ok=True)
    scratch = tempfile.mkdtemp(prefix=".metrics-check-", dir=target)
    try:
        try:
            parse_dbt_project(settings, target_path=scratch)
        except StackError as e:
            out.problems.append(e.reason)
            return out
        raw = (Path(scratch) / "semantic_manifest.json").read_bytes()
        out.problems += metricflow_problems(raw.decode())
        try:
            catalog = load(raw)
        except ManifestError as e:
            out.problems.append(f"Tally cannot read the semantic manifest: {e}")
            return out
        out.problems += [f"metric {name}: Tally does not serve it: {why}" for name, why in catalog.refused.items()]
        out.served = list(catalog.names)
        if publish and not out.problems:
            for name in ("manifest.json", "semantic_manifest.json"):
                os.replace(Path(scratch) / name, target / name)
            out.published = True
        return out
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


class CompileOnly:
    """The SqlClient MetricFlow needs to compile queries; nothing is run."""

    def __init__(self):
        from metricflow.protocols.sql_client import SqlEngine
        from metricflow.sql.render.postgres import PostgresSQLSqlPlanRenderer

        self.sql_engine_type = SqlEngine.POSTGRES
        self.sql_plan_renderer = PostgresSQLSqlPlanRenderer()

    def render_bind_parameter_key(self, key: str) -> str:
        return f"%({key})s"

    def query(self, *args, **kwargs):
        raise NotImplementedError("compile only")

    execute = dry_run = query

    def close(self) -> None:
        pass


def metricflow_problems(manifest_json: str) -> list[str]:
    """MetricFlow's objections to a semantic manifest, as it words them (dbt-metricflow is installed
    by `make install`; without it this check is skipped and says so)."""
    try:
        from metricflow.engine.metricflow_engine import MetricFlowEngine, MetricFlowQueryRequest
        from metricflow_semantic_interfaces.validations.semantic_manifest_validator import SemanticManifestValidator
        from metricflow_semantics.model.dbt_manifest_parser import parse_manifest_from_dbt_generated_manifest
        from metricflow_semantics.model.semantic_manifest_lookup import SemanticManifestLookup
    except ImportError:
        return ["MetricFlow is not installed (`make install` installs dbt-metricflow): its checks did not run"]
    manifest = parse_manifest_from_dbt_generated_manifest(manifest_json)
    results = SemanticManifestValidator().validate_semantic_manifest(manifest)
    if problems := [issue.as_readable_str() for issue in (*results.errors, *results.future_errors)]:
        return problems
    try:
        engine = MetricFlowEngine(SemanticManifestLookup(manifest), CompileOnly())
    except Exception as e:  # MetricFlow raises plain exceptions (KeyError, ...) for what it cannot link
        return [f"MetricFlow: {type(e).__name__}: {e}"]
    for metric in manifest.metrics:
        request = MetricFlowQueryRequest.create(metric_names=[metric.name], group_by_names=GROUP_BY)
        try:
            engine.explain(request)
        except Exception as e:
            problems.append(f"metric {metric.name}: MetricFlow: {e}")
    return problems
