"""What a query's named metrics need from the rollups: each distinct filtered aggregate once (purchases
and revenue share their filter, conversion and purchases share an aggregate), and one compiled function
that turns a bucket's aggregates into every metric's value (a few microseconds a point, where a tree of
calls per metric cost three times as much)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from psycopg import sql

from tally.semantic.catalog import Catalog, LeafKey, Value
from tally.semantic.expressions import function
from tally.semantic.filters import to_sql


@dataclass
class Plan:
    """Implements tally.storage.aggregates.NamedMetrics."""

    key: str  # the definitions it computes: an answer cached under another key is not this one's
    names: list[str]
    # (rollup column, sum/min/max, SQL filter on the row or None), one per column the query adds
    aggregates: list[tuple[str, str, sql.Composable | None]]
    params: dict[str, str]  # the filters' texts, by the placeholder names in `aggregates`
    keys: list[LeafKey]  # the same aggregates as (column, aggregation, canonical filter text)
    fn: Callable[..., tuple]  # the aggregates' values -> each name's value

    def values(self, row: tuple) -> dict[str, Value]:
        """Each named metric's value from one bucket's aggregates (in the order of `aggregates`)."""
        return dict(zip(self.names, self.fn(*row), strict=True))


def plan(catalog: Catalog, names: list[str]) -> Plan:
    """The plan of `names` (served metrics of `catalog`), made once per catalog and list of names."""
    cached = catalog.plans.get(tuple(names))
    if cached is not None:
        return cached
    metrics = [catalog.metrics[n] for n in names]
    leaves = {leaf.key: leaf for m in metrics for leaf in m.leaves}
    sources = {key: f"v{i}" for i, key in enumerate(leaves)}
    params: dict[str, str] = {}
    out = Plan(
        key=f"{catalog.digest}:{','.join(names)}",
        names=list(names),
        aggregates=[(x.column, x.agg, None if x.where is None else to_sql(x.where, params)) for x in leaves.values()],
        params=params,
        keys=list(leaves),
        fn=function([m.render(sources) for m in metrics], len(leaves)),
    )
    if len(catalog.plans) < 1000:  # distinct lists of names asked for: a bound, not a cache policy
        catalog.plans[tuple(names)] = out
    return out
