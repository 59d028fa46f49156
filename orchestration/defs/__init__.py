"""One folder per domain (stream/, rollups/, quality/, backfill/, migration/), each with the same file
names (assets.py, checks.py, schedules.py, sensors.py, resources.py). Loaded by ../definitions.py."""
