"""`tally backfill`: history from files or a legacy table, with a progress bar and a summary line."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Annotated

import typer

Paths = Annotated[
    list[Path] | None,
    typer.Argument(
        help="NDJSON, CSV or Parquet files (.gz and .zst too), read in the order given.", show_default=False
    ),
]


def identity_of_files(paths: list[Path]) -> str:
    """The same files, unchanged, are the same run: a second run finds its chunks committed."""
    parts = []
    for p in paths:
        st = p.stat()
        parts.append([str(p.resolve()), st.st_size, st.st_mtime_ns])
    return "files:" + hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:32]


def identity_of_query(dsn: str, query: str) -> str:
    from psycopg.conninfo import conninfo_to_dict

    where = {k: v for k, v in conninfo_to_dict(dsn).items() if k in ("host", "port", "dbname", "user")}
    return "sql:" + hashlib.sha256(json.dumps([where, query], sort_keys=True).encode()).hexdigest()[:32]


def backfill(
    paths: Paths = None,
    sql: Annotated[
        str | None, typer.Option("--sql", help="A query over a legacy table, columns named as event fields.")
    ] = None,
    dsn: Annotated[str | None, typer.Option("--dsn", help="Where --sql runs (a PostgreSQL connection string).")] = None,
    rejects: Annotated[
        Path | None, typer.Option("--rejects", help="Write rejected rows here (NDJSON: row, field, reason).")
    ] = None,
    chunk_rows: Annotated[int | None, typer.Option(help="Rows a chunk (default: TALLY_BACKFILL_CHUNK_ROWS).")] = None,
) -> None:
    """Load history through the stream's own validation, dedup and aggregation. Hours the stream has
    closed are added directly; later ones go through Kafka. Exit 0 when every valid row is stored;
    a second run of the same input changes nothing."""
    from tqdm import tqdm

    from tally.backfill import sources
    from tally.backfill.importer import Backfill, connect_error, encode_reject
    from tally.settings import get_settings

    if bool(paths) == bool(sql):
        raise typer.BadParameter("give files, or --sql with --dsn, not both")
    if sql and not dsn:
        raise typer.BadParameter("--sql needs --dsn")
    s = get_settings()
    if paths:
        missing = [str(p) for p in paths if not p.is_file()]
        if missing:
            raise typer.BadParameter(f"no such file: {', '.join(missing)}")
        try:
            for p in paths:
                sources.kind_of(p)
        except ValueError as e:
            raise typer.BadParameter(str(e)) from None
        identity, label, rows = identity_of_files(paths), ", ".join(map(str, paths)), sources.rows_of(paths)
    else:
        identity, label, rows = identity_of_query(dsn, sql), f"sql: {sql}", sources.sql_rows(dsn, sql)
    try:
        job = Backfill(s, identity, label, chunk_rows)
    except Exception as e:
        typer.secho(f"error: {connect_error(e)}", fg="red", err=True)
        raise typer.Exit(1) from None
    bar = tqdm(unit=" rows", unit_scale=True, desc="backfill", file=None, dynamic_ncols=True)
    try:
        progress = job.load(rows, on_chunk=lambda p: bar.update(p.counts.rows - bar.n))
        found = job.rejects()
    except Exception as e:
        bar.close()
        typer.secho(f"error: the backfill stopped: {connect_error(e)}; run it again to go on", fg="red", err=True)
        raise typer.Exit(1) from None
    finally:
        job.close()
    bar.close()
    if rejects is not None:
        rejects.write_bytes(b"".join(encode_reject(*r) + b"\n" for r in found))
    for row, field, reason in found[:5]:
        typer.echo(f"  rejected row {row}: {field + ': ' if field else ''}{reason}", err=True)
    if len(found) > 5:
        typer.echo(
            f"  ... {len(found) - 5} more{f' in {rejects}' if rejects else ' (--rejects FILE lists them)'}", err=True
        )
    skipped = f"; {progress.skipped_chunks} chunks were done by an earlier run" if progress.skipped_chunks else ""
    typer.echo(f"backfill run {job.run_id}: {progress.counts.line()} in {progress.seconds:.1f} s{skipped}")
