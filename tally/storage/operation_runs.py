"""The last run of each scheduled operation, for Prometheus (through PostgreSQL's exporter) and alerts."""

from __future__ import annotations

from datetime import datetime

import psycopg

from tally.settings import Settings


def record(settings: Settings, operation: str, hour: datetime | None, events: int, mismatches: int) -> None:
    """Overwrite `operation`'s last run. Called once a run has finished its work (a run that fails
    before leaves the previous one, so the alert on its age fires)."""
    with psycopg.connect(settings.pg_dsn, autocommit=True) as conn:
        conn.execute(
            "insert into operation_runs (operation, finished_at, hour, events, mismatches)"
            " values (%s, now(), %s, %s, %s) on conflict (operation) do update set"
            " finished_at = excluded.finished_at, hour = excluded.hour, events = excluded.events,"
            " mismatches = excluded.mismatches",
            (operation, hour, events, mismatches),
        )
