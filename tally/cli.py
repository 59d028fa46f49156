"""The `tally` command: run the local stack and (in later commands) work with Tally's data."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Annotated

import typer

from tally.backfill.command import backfill as backfill_command
from tally.settings import get_settings
from tally.stack import runner
from tally.stack.service import StackError

app = typer.Typer(
    help="Tally: real-time event aggregation.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
stack = typer.Typer(help="Run Kafka, Cassandra, PostgreSQL and Prometheus as local processes.", no_args_is_help=True)
app.add_typer(stack, name="stack")

Components = Annotated[list[str] | None, typer.Argument(help="Components (default: all).", show_default=False)]


def _fail(e: StackError) -> None:
    typer.secho(f"error: {e}", fg="red", err=True)
    raise typer.Exit(1)


@stack.command("up")
def stack_up(components: Components = None) -> None:
    """Start every service that is not running and wait until each answers. A second `up` is a no-op."""
    s = get_settings()
    typer.echo(f"tally stack up (state in {s.state_dir})", err=True)
    try:
        results = runner.up(s, components)
    except StackError as e:
        _fail(e)
    width = max(len(r.name) for r in results)
    for r in results:
        colour = "green" if r.ok else "red"
        mark = "ok    " if r.ok else "FAILED"
        typer.secho(f"  {r.name:<{width}}  {mark}  {r.seconds:6.1f}s  {r.message}", fg=colour)
    if not all(r.ok for r in results):
        typer.secho("some components failed; `tally status` shows the state, the log path is above", fg="red", err=True)
        raise typer.Exit(1)


@stack.command("down")
def stack_down(
    components: Components = None,
    purge: Annotated[bool, typer.Option("--purge", help="Also delete the services' data.")] = False,
) -> None:
    """Stop the processes this stack started (never others). Data stays unless --purge."""
    s = get_settings()
    try:
        stopped = runner.down(s, components, purge=purge)
    except StackError as e:
        _fail(e)
    typer.echo(f"stopped: {', '.join(stopped) or 'nothing was running'}" + (" (data purged)" if purge else ""))


@stack.command("status")
def stack_status(
    components: Components = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Show each component as up/down with pid and port, and (for the whole stack) the pipeline's key
    figures and the alerts firing, from Prometheus; exit 1 if any component is down."""
    from tally.ops import figures

    s = get_settings()
    try:
        rows = runner.status(s, components)
    except StackError as e:
        _fail(e)
    read = figures.read(s.prometheus_base) if not components else None
    if as_json:
        out: dict = {"components": [r.as_dict() for r in rows]}
        if isinstance(read, tuple):
            out.update(figures.as_json(*read))
        elif read is not None:
            out["figures_error"] = read
        typer.echo(json.dumps(out))
    else:
        for r in rows:
            colour = "green" if r.status == "up" else "red"
            pid = str(r.pid) if r.pid else "-"
            typer.secho(f"  {r.name:<18} {r.status:<5} pid {pid:<8} port {r.port:<6} {r.detail}", fg=colour)
        _print_figures(read)
    if any(r.status != "up" for r in rows):
        raise typer.Exit(1)


def _print_figures(read) -> None:
    from tally.ops import figures

    if read is None:
        return
    if isinstance(read, str):
        typer.secho(f"\n  figures: {read}", fg="yellow")
        return
    values, alerts = read
    typer.echo("\n  pipeline (Prometheus, last minute)")
    for f in values:
        typer.echo(f"  {f.label:<42} {figures.describe(f):>12}")
    for a in alerts:
        labels = a["labels"]
        where = " ".join(f"{k}={v}" for k, v in labels.items() if k not in ("alertname", "severity"))
        typer.secho(f"  ALERT {labels.get('alertname')} ({labels.get('severity')}) {where}", fg="red")


@stack.command("logs")
def stack_logs(
    component: Annotated[str, typer.Argument(help="kafka, cassandra, postgres, prometheus, api or dataflow.")],
    lines: Annotated[int, typer.Option("-n", help="How many lines to show.")] = 50,
    follow: Annotated[bool, typer.Option("-f", "--follow", help="Keep printing new lines.")] = False,
) -> None:
    """Print a component's log."""
    s = get_settings()
    try:
        (svc,) = runner.select(s, [component])
    except StackError as e:
        _fail(e)
    if not svc.log_file.exists():
        typer.echo(f"{svc.name} has no log yet ({svc.log_file})", err=True)
        raise typer.Exit(1)
    argv = ["tail", "-n", str(lines)] + (["-F"] if follow else []) + [str(svc.log_file)]
    if follow:
        os.execvp("tail", argv)
    typer.echo(subprocess.run(argv, capture_output=True, text=True).stdout, nl=False)


# `tally up|down|status` are what `make run` and scripts call; for now they mean the stack.
app.command("up", help="Start Tally (for now: the stack).")(stack_up)
app.command("down", help="Stop Tally.")(stack_down)
app.command("status", help="Show every component; exit 1 if any is down.")(stack_status)


@app.command("send")
def send(
    rate: Annotated[float, typer.Option(help="Events per second.")] = 1000,
    duration: Annotated[float, typer.Option(help="Seconds to send for.")] = 60,
    batch: Annotated[int, typer.Option(help="Events per request (NDJSON, gzip).")] = 500,
    seed: Annotated[int | None, typer.Option(help="Seed, for a repeatable stream.")] = None,
) -> None:
    """Send realistic synthetic events to the running API, for demos."""
    import asyncio
    import gzip

    from tally.auth import devissuer
    from tally.loadgen import Generator, post_bodies

    s = get_settings()
    gen = Generator(seed=seed)
    url = f"http://127.0.0.1:{s.api_port}/api/events"

    def next_body() -> bytes:
        return gzip.compress(gen.body(batch)[0], compresslevel=1)

    typer.echo(f"sending {rate:.0f} events/s for {duration:.0f} s to {url} ...", err=True)
    auth = devissuer.bearer(s, ["events:write"])
    stats = asyncio.run(post_bodies(url, next_body, batch, rate, duration, concurrency=4, auth=auth))
    typer.echo(
        f"sent {stats.sent} events in {stats.seconds:.1f} s ({stats.sent / stats.seconds:.0f}/s); "
        f"accepted {stats.accepted}; responses {stats.statuses}; failed requests {stats.failed_requests}"
    )
    if stats.accepted != stats.sent:
        raise typer.Exit(1)


@app.command("token")
def token(
    scope: Annotated[
        list[str] | None, typer.Option("--scope", help="Grant only this scope (repeatable); default: every scope.")
    ] = None,
    ttl: Annotated[int, typer.Option(help="Seconds until it expires.", min=1, max=30 * 86400)] = 24 * 3600,
) -> None:
    """Print a bearer token of the local development issuer, one line, for scripts and curl
    (`curl -H "Authorization: Bearer $(tally token)" ...`)."""
    from tally.auth import devissuer

    s = get_settings()
    if s.auth_issuer:
        typer.secho("error: this API trusts TALLY_AUTH_ISSUER, not the development issuer", fg="red", err=True)
        raise typer.Exit(1)
    try:
        typer.echo(devissuer.mint(s, tuple(scope or devissuer.SCOPES), ttl))
    except ValueError as e:
        typer.secho(f"error: {e}", fg="red", err=True)
        raise typer.Exit(2) from None


apikey = typer.Typer(help="API keys for machine clients: created, listed, revoked.", no_args_is_help=True)
app.add_typer(apikey, name="apikey")


@apikey.command("create")
def apikey_create(
    name: Annotated[str, typer.Option(help="Who or what uses it, for the list.")],
    scope: Annotated[list[str], typer.Option("--scope", help="A scope it grants (repeatable).")],
) -> None:
    """Create a key and print it: the only time it is shown (Tally keeps its hash)."""
    from tally.auth import apikeys

    try:
        typer.echo(apikeys.create(get_settings(), name, scope))
    except ValueError as e:
        typer.secho(f"error: {e}", fg="red", err=True)
        raise typer.Exit(2) from None


@apikey.command("list")
def apikey_list() -> None:
    """Every key: id, name, scopes, created, revoked."""
    from tally.auth import apikeys

    for k in apikeys.list_keys(get_settings()):
        revoked = f"revoked {k.revoked_at:%Y-%m-%d %H:%M}" if k.revoked_at else "live"
        typer.echo(f"{k.id}  {k.name:<24}  {' '.join(k.scopes):<36}  created {k.created_at:%Y-%m-%d %H:%M}  {revoked}")


@apikey.command("revoke")
def apikey_revoke(key_id: Annotated[str, typer.Argument(help="The id `tally apikey list` shows.")]) -> None:
    """Revoke a key: the API refuses it within TALLY_AUTH_KEY_CACHE_S (5 s)."""
    from tally.auth import apikeys

    if not apikeys.revoke(get_settings(), key_id):
        typer.secho(f"error: no live key {key_id}", fg="red", err=True)
        raise typer.Exit(1)
    typer.echo(f"revoked {key_id}")


@app.command("metrics")
def metrics() -> None:
    """Check the named metrics of dbt_project/ (dbt parse, MetricFlow, what Tally can compute) and, if
    they pass, hand them to the API, which serves them within seconds. `make metrics` runs this."""
    from tally.semantic.check import check

    s = get_settings()
    typer.echo(f"checking the metrics of {s.dbt_project_dir} (dbt parse, MetricFlow, Tally) ...", err=True)
    out = check(s)
    for problem in out.problems:
        typer.secho(problem, fg="red", err=True)
    if out.problems:
        typer.secho("not changed: the API keeps serving the metrics it had", fg="red", err=True)
        raise typer.Exit(1)
    typer.echo(f"ok: {', '.join(out.served) or 'no named metrics'}; the API serves them within seconds")


@app.command("correct")
def correct() -> None:
    """Fold late events whose hour has closed into the rollups (the correction step), until none is left."""
    from tally.storage.corrections import fold_late

    s = get_settings()
    total = duplicates = 0
    while (folded := fold_late(s)).rows:
        total += folded.events
        duplicates += folded.duplicates
    typer.echo(f"folded {total} late events into the rollups; {duplicates} were copies of events counted before")


app.command("backfill")(backfill_command)


@app.command(
    "bench",
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    add_help_option=False,
)
def bench(ctx: typer.Context) -> None:
    """Run the benchmark harness against the running stack (`tally bench --help` for its options)."""
    from tally.settings import REPO_ROOT

    # The harness lives beside the packages (benchmarks/), not inside the core: run it, don't import it.
    raise typer.Exit(subprocess.call([sys.executable, "-m", "benchmarks.run", *ctx.args], cwd=REPO_ROOT))


if __name__ == "__main__":
    app()
