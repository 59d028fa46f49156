"""One day of history, as the orchestrator's daily backfill reads it: files named by the day under
`backfill_dir`, or `backfill_query` over `backfill_dsn` with the day's bounds as parameters."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime

from tally.backfill import sources
from tally.backfill.command import identity_of_files, identity_of_query
from tally.settings import Settings


class NoSource(Exception):
    """Nothing says where history comes from: a setting is missing."""


@dataclass
class Source:
    identity: str
    label: str
    rows: Iterator[bytes | str]


def files_of_day(directory, day: str) -> list:
    """`DIR/DAY/*` and `DIR/*DAY*`, of the formats a backfill reads, sorted by name."""
    found = [p for p in (directory / day).glob("*") if p.is_file()] if (directory / day).is_dir() else []
    found += [p for p in directory.glob(f"*{day}*") if p.is_file()]
    out = []
    for p in sorted(set(found)):
        try:
            sources.kind_of(p)
        except ValueError:
            continue  # not a format a backfill reads (a checksum, a README): left alone
        out.append(p)
    return out


def for_day(settings: Settings, start: datetime, end: datetime) -> Source:
    day = start.strftime("%Y-%m-%d")
    if settings.backfill_dir is not None:
        paths = files_of_day(settings.backfill_dir, day)
        if not paths:
            return Source(f"files:none:{day}", f"no files for {day} under {settings.backfill_dir}", iter(()))
        return Source(identity_of_files(paths), ", ".join(p.name for p in paths), sources.rows_of(paths))
    if settings.backfill_query and settings.backfill_dsn:
        params = {"start": start, "end": end}
        return Source(
            identity_of_query(settings.backfill_dsn, settings.backfill_query),
            f"{settings.backfill_query} ({day})",
            sources.sql_rows(settings.backfill_dsn, settings.backfill_query, params),
        )
    raise NoSource(
        "no history source: set TALLY_BACKFILL_DIR (files named by day) or TALLY_BACKFILL_QUERY with"
        " TALLY_BACKFILL_DSN (a query with %(start)s and %(end)s), then start Dagster again"
    )
