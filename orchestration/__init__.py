"""Dagster definitions: the stream's tables as observable assets, dbt rollups, backfill, migration, quality.

May import `tally` (the core); nothing in `tally` imports this package.
"""
