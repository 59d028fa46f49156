"""The named metrics analysts define in dbt_project/ (MetricFlow's semantic layer), answered by
`/api/aggregate` from the rollups on the same path as the built-in metrics.

dbt writes the definitions to target/semantic_manifest.json; `catalog` reads them into what Tally
can compute (simple metrics over the rollups' measures, filtered on event type and source; ratios;
derived expressions) and refuses, with the reason, every metric that needs anything else. `filters`
and `expressions` parse the SQL fragments a definition holds; `plan` turns the metrics a query asks
for into filtered aggregates over rollup rows and the arithmetic on them; `manifest_file` reloads the
file when it changes; `check` is `make metrics`.
"""
