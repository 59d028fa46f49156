"""The named metrics of a dbt semantic manifest (target/semantic_manifest.json), as Tally computes them.

A metric is served only if every part of it can be computed exactly from the rollup rows:
- its measures belong to the semantic model over `rollup_minutely` (the view that adds the stream's
  partitions up) and are one of the rollup columns with the aggregation that combines its rows
  (`event_count`, `value_count`, `value_sum` summed; `value_min` min; `value_max` max);
- its filters use only dimensions that are the `event_type` and `source` columns (tally.semantic.filters);
- it is simple, ratio or derived (tally.semantic.expressions), without offsets, time-spine joins or
  cumulative windows.
Every other metric is refused with the reason (and so is any metric built on a refused one), never
answered with part of its definition ignored.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import msgspec

from tally.semantic.expressions import ExpressionError, Render, compile_expr, literal
from tally.semantic.filters import FilterError, Predicate, all_of, parse, text
from tally.storage.aggregates import GROUPS, MEASURES, METRICS

ROLLUP_MODEL = "rollup_minutely"  # the dbt model (a view) the rollup tables answer for
TIME_COLUMN = "minute_start"
# What a point holds besides the metrics: a named metric may not take these names either.
RESERVED = {*METRICS, "t", "final"}
_IDENT = re.compile(r"[a-z_][a-z_0-9]*")
_UTC_MINUTE = {TIME_COLUMN, f"{TIME_COLUMN} at time zone 'utc'", f"({TIME_COLUMN} at time zone 'utc')"}

# A filtered aggregate over rollup rows: (column, aggregation, canonical filter text); see `Leaf`.
LeafKey = tuple[str, str, str]
Value = int | float | None


class ManifestError(ValueError):
    """The file is not a semantic manifest Tally can read at all (not one metric's problem)."""


class Refused(ValueError):
    pass


@dataclass(frozen=True)
class Leaf:
    column: str
    agg: str
    where: Predicate | None

    @property
    def key(self) -> LeafKey:
        return (self.column, self.agg, text(self.where))


@dataclass
class Input:
    """A metric another one is built from, as the definition names it."""

    metric: str
    alias: str | None = None
    filter: str | None = None


@dataclass
class NamedMetric:
    name: str
    label: str
    description: str | None
    type: str  # simple, ratio, derived
    filter: str | None = None
    measure: dict | None = None  # simple: {"name", "agg", "column"}
    numerator: Input | None = None
    denominator: Input | None = None
    expr: str | None = None
    inputs: list[Input] = field(default_factory=list)
    # Computed: the filtered aggregates it needs, and its Python source given theirs (tally.semantic.plan).
    leaves: list[Leaf] = field(default_factory=list, repr=False)
    render: Callable[[dict[LeafKey, str]], str] = field(default=lambda sources: "None", repr=False)


@dataclass
class Catalog:
    metrics: dict[str, NamedMetric] = field(default_factory=dict)  # served, in the manifest's order
    refused: dict[str, str] = field(default_factory=dict)  # name -> why not
    digest: str = ""  # of the manifest: cached answers are kept under it
    plans: dict = field(default_factory=dict, repr=False)  # tally.semantic.plan's, by list of names

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self.metrics)


def load(raw: bytes) -> Catalog:
    """The catalog of a semantic manifest's bytes. Raises ManifestError if it cannot be read at all."""
    try:
        doc = msgspec.json.decode(raw)
    except msgspec.DecodeError as e:
        raise ManifestError(f"not JSON: {e}") from e
    if not isinstance(doc, dict) or not isinstance(doc.get("metrics"), list):
        raise ManifestError("not a dbt semantic manifest (no `metrics` list)")
    try:
        return _Loader(doc, hashlib.sha256(raw).hexdigest()[:16]).catalog()
    except (KeyError, TypeError, AttributeError) as e:
        raise ManifestError(f"not a semantic manifest this dbt writes: {type(e).__name__} {e}") from e


def _filters(node: Any) -> list[str]:
    """The where templates of a `filter` entry (None, or {"where_filters": [{"where_sql_template"}]})."""
    if not node:
        return []
    return [f["where_sql_template"] for f in node.get("where_filters") or []]


def _shown(templates: list[str]) -> str | None:
    return " and ".join(t.strip() for t in templates) or None


class _Loader:
    def __init__(self, doc: dict, digest: str):
        self.doc, self.digest = doc, digest
        self.measures: dict[str, tuple[str, str] | str] = {}  # name -> (column, agg), or why not
        self.dimensions: dict[str, str] = {}  # filter name (event__source) -> rollup column
        self.defs = {m["name"]: m for m in doc["metrics"]}
        self.done: dict[tuple[str, str], tuple[list[Leaf], Callable]] = {}  # (leaves, render) by use
        self.refused: dict[str, str] = {}
        for model in doc.get("semantic_models") or []:
            self._model(model)

    def _model(self, model: dict) -> None:
        relation = (model.get("node_relation") or {}).get("alias")
        if relation != ROLLUP_MODEL:
            for m in model.get("measures") or []:
                self.measures[m["name"]] = (
                    f"measure {m['name']} is on {relation or model['name']}; Tally answers only from the"
                    f" rollups, which `{ROLLUP_MODEL}` mirrors"
                )
            return
        times = {d["name"]: d for d in model.get("dimensions") or [] if d.get("type") == "time"}
        default_time = (model.get("defaults") or {}).get("agg_time_dimension")
        entities = {model.get("primary_entity"), *(e["name"] for e in model.get("entities") or [])} - {None}
        for d in model.get("dimensions") or []:
            column = (d.get("expr") or d["name"]).strip().lower()
            if d.get("type") == "categorical" and column in GROUPS:
                for entity in entities:
                    self.dimensions[f"{entity}__{d['name']}"] = column
        for m in model.get("measures") or []:
            self.measures[m["name"]] = self._measure(m, times.get(m.get("agg_time_dimension") or default_time))

    @staticmethod
    def _measure(m: dict, time: dict | None) -> tuple[str, str] | str:
        name = m["name"]
        column = (m.get("expr") or name).strip().lower()
        if not _IDENT.fullmatch(column) or column not in MEASURES:
            return f"measure {name} is {column!r}; a measure must be one of the rollup columns {', '.join(MEASURES)}"
        agg = str(m.get("agg", "")).lower()
        if agg != MEASURES[column]:
            return f"measure {name} is {agg} of {column}; over the rollups only {MEASURES[column]} of it is exact"
        if m.get("non_additive_dimension") or m.get("agg_params"):
            return f"measure {name} has non_additive_dimension or agg_params, which Tally does not compute"
        if time is None or (time.get("expr") or time["name"]).strip().lower() not in _UTC_MINUTE:
            return f"measure {name} is not aggregated over `{TIME_COLUMN}` (UTC), the rollups' event time"
        if ((time.get("type_params") or {}).get("time_granularity") or "").lower() != "minute":
            return f"measure {name}'s time dimension is not at minute grain, as the rollups are"
        return column, agg

    def catalog(self) -> Catalog:
        served: dict[str, NamedMetric] = {}
        for m in self.doc["metrics"]:
            try:
                metric = self._describe(m)
                metric.leaves, metric.render = self._compile(m["name"], None, ())
            except (Refused, FilterError, ExpressionError) as e:
                self.refused[m["name"]] = str(e)
                continue
            served[m["name"]] = metric
        return Catalog(served, self.refused, self.digest)

    def _describe(self, m: dict) -> NamedMetric:
        name, kind, tp = m["name"], m["type"], m.get("type_params") or {}
        if name in RESERVED:
            raise Refused(f"the name {name!r} is taken by a built-in metric of /api/aggregate")
        out = NamedMetric(name, m.get("label") or name, m.get("description"), kind)
        out.filter = _shown(_filters(m.get("filter")))
        if kind == "simple":
            ref = tp.get("measure") or {}
            measure_name = ref.get("name") if isinstance(ref, dict) else ref
            measure = self.measures.get(measure_name)
            if isinstance(measure, tuple):
                out.measure = {"name": measure_name, "agg": measure[1], "column": measure[0]}
        elif kind == "ratio":
            out.numerator, out.denominator = self._input(tp.get("numerator")), self._input(tp.get("denominator"))
        elif kind == "derived":
            out.expr = tp.get("expr")
            out.inputs = [self._input(i) for i in tp.get("metrics") or []]
        return out

    @staticmethod
    def _input(ref: Any) -> Input:
        if isinstance(ref, str):
            return Input(ref)
        return Input(ref["name"], ref.get("alias"), _shown(_filters(ref.get("filter"))))

    def _where(self, templates: list[str]) -> Predicate | None:
        return all_of([parse(t, self.dimensions) for t in templates])

    def _compile(self, name: str, inherited: Predicate | None, path: tuple[str, ...]) -> tuple[list[Leaf], Callable]:
        """The leaves of metric `name` with the filter its users put on it, and the renderer of its
        Python source given the leaves' sources."""
        memo = (name, text(inherited))
        if memo in self.done:
            return self.done[memo]
        if name in path:
            raise Refused(f"metric {name} is built from itself ({' -> '.join((*path, name))})")
        m = self.defs.get(name)
        if m is None:
            raise Refused(f"it is built from {name}, which is not defined")
        kind, tp = m["type"], m.get("type_params") or {}
        where = all_of([inherited, self._where(_filters(m.get("filter")))])
        if kind == "simple":
            out = self._simple(name, tp, where)
        elif kind == "ratio":
            out = self._ratio(tp, where, (*path, name))
        elif kind == "derived":
            out = self._derived(name, tp, where, (*path, name))
        else:
            raise Refused(f"{kind} metrics are not computed by Tally (simple, ratio and derived are)")
        self.done[memo] = out
        return out

    def _simple(self, name: str, tp: dict, where: Predicate | None) -> tuple[list[Leaf], Callable]:
        ref = tp.get("measure")
        if not ref:
            raise Refused(f"simple metric {name} names no measure")
        if isinstance(ref, str):
            ref = {"name": ref}
        measure = self.measures.get(ref["name"])
        if measure is None:
            raise Refused(f"measure {ref['name']} is not defined")
        if isinstance(measure, str):
            raise Refused(measure)
        if ref.get("join_to_timespine"):
            raise Refused("join_to_timespine: Tally's answers have a point only where the rollups have rows")
        leaf = Leaf(measure[0], measure[1], all_of([where, self._where(_filters(ref.get("filter")))]))
        key, fill = leaf.key, ref.get("fill_nulls_with")
        if fill is None:
            return [leaf], lambda sources: sources[key]
        try:
            value = literal(fill)
        except ExpressionError as e:
            raise Refused(f"fill_nulls_with: {e}") from e
        return [leaf], lambda sources: f"_fill({sources[key]}, {value})"

    def _inputs(self, refs: list[Any], where: Predicate | None, path: tuple[str, ...]):
        for ref in refs:
            ref = {"name": ref} if isinstance(ref, str) else ref
            if ref.get("offset_window") or ref.get("offset_to_grain"):
                raise Refused(f"input {ref['name']} has an offset, which Tally does not compute")
            try:
                own = self._where(_filters(ref.get("filter")))
                leaves, render = self._compile(ref["name"], all_of([where, own]), path)
            except (Refused, FilterError, ExpressionError) as e:
                raise Refused(f"input {ref['name']}: {e}") from e
            yield ref.get("alias") or ref["name"], leaves, render

    def _ratio(self, tp: dict, where: Predicate | None, path: tuple[str, ...]) -> tuple[list[Leaf], Callable]:
        (_, num_leaves, num), (_, den_leaves, den) = self._inputs([tp["numerator"], tp["denominator"]], where, path)
        return _unique(num_leaves + den_leaves), lambda sources: f"_ratio({num(sources)}, {den(sources)})"

    def _derived(self, name: str, tp: dict, where, path: tuple[str, ...]) -> tuple[list[Leaf], Callable]:
        inputs = list(self._inputs(tp.get("metrics") or [], where, path))
        if not inputs:
            raise Refused(f"derived metric {name} has no input metrics")
        expr: Render
        expr, _used = compile_expr(tp.get("expr") or "", {alias.lower() for alias, _, _ in inputs})
        renders = [(alias.lower(), render) for alias, _, render in inputs]
        leaves = _unique([leaf for _, input_leaves, _ in inputs for leaf in input_leaves])
        return leaves, lambda sources: expr({alias: render(sources) for alias, render in renders})


def _unique(leaves: list[Leaf]) -> list[Leaf]:
    return list({leaf.key: leaf for leaf in leaves}.values())
