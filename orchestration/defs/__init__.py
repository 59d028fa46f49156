"""One folder per domain, each with the same file names (assets.py, checks.py, schedules.py,
sensors.py, resources.py): stream/ observes what the dataflow writes, corrections/ folds late events
and reconciles, rollups/ is the dbt project, quality/ the expectations and the report.
Loaded by ../definitions.py."""
