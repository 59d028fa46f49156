"""What a query's named metrics need from the rollups: each distinct filtered aggregate once (purchases
and revenue share their filter, conversion and purchases share a leaf), and the arithmetic that
turns one bucket's aggregates into each metric's value."""

from __future__ import annotations

from dataclasses import dataclass

from psycopg import sql

from tally.semantic.catalog import Catalog, LeafKey, Value
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
    fns: list  # per name, the function of {key: value} that computes it

    def values(self, row: tuple) -> dict[str, Value]:
        """Each named metric's value from one bucket's aggregates (in the order of `aggregates`)."""
        env = dict(zip(self.keys, row, strict=True))
        return {name: fn(env) for name, fn in zip(self.names, self.fns, strict=True)}


def plan(catalog: Catalog, names: list[str]) -> Plan:
    metrics = [catalog.metrics[n] for n in names]
    leaves = {leaf.key: leaf for m in metrics for leaf in m.leaves}
    params: dict[str, str] = {}
    return Plan(
        key=f"{catalog.digest}:{','.join(names)}",
        names=list(names),
        aggregates=[(x.column, x.agg, None if x.where is None else to_sql(x.where, params)) for x in leaves.values()],
        params=params,
        keys=list(leaves),
        fns=[m.fn for m in metrics],
    )
