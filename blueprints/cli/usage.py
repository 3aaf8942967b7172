"""``flask --app app usage …``: the request log and its totals (export, prune,
reconcile)."""

from __future__ import annotations

from datetime import date
from functools import partial

import click
from flask.cli import AppGroup

from blueprints.cli.common import CLI_ACTOR, fail, runtime, session_scope
from tally.db import utcnow
from tally.limits.corrections import correct_counters
from tally.reports.breakdowns import columns, grouped_rows
from tally.reports.exports import FORMATS, export_chunks
from tally.usage.reconcile import generation_client, reconcile_pass
from tally.usage.retention import MONTH_DAYS, oldest_request, prune_requests

group = AppGroup("usage", help="The request log and its totals.")


def _day(option: str, value: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError:
        fail(f"{option} must be a date written YYYY-MM-DD, got {value!r}")


@group.command("export")
@click.option("--from", "start", required=True, help="First UTC day, YYYY-MM-DD.")
@click.option("--to", "end", required=True, help="Last UTC day (included), YYYY-MM-DD.")
@click.option(
    "--group-by",
    required=True,
    help="user, model, endpoint, day, tag, key or metadata:KEY (e.g. metadata:plan).",
)
@click.option("--format", "fmt", default="csv", help="csv (the default) or json.")
@click.option("--key", default=None, help="Only the traffic of this API key.")
def usage_export(start: str, end: str, group_by: str, fmt: str, key: str | None) -> None:
    """Usage of --from..--to per group, as CSV or JSON on stdout, streamed."""
    first, last = _day("--from", start), _day("--to", end)
    if fmt not in FORMATS:
        fail(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if first > last:
        fail("--from must be on or before --to")
    with session_scope() as session:
        rows = grouped_rows(session, first, last, group_by, key=key)
        for chunk in export_chunks(fmt, columns(group_by), rows):
            click.echo(chunk, nl=False)


@group.command("prune")
@click.option("--older-than", "days", required=True, type=click.IntRange(1, 100_000))
def usage_prune(days: int) -> None:
    """Delete request rows older than DAYS days; the daily totals stay (for cron)."""
    with session_scope() as session:
        pruned = prune_requests(session, days, utcnow(), CLI_ACTOR)
        oldest = oldest_request(session)
    when = pruned.cutoff.isoformat(timespec="seconds")
    click.echo(f"Deleted {pruned.rows} request rows created before {when} UTC; totals kept.")
    left = oldest.isoformat(timespec="seconds") if oldest else "none"
    click.echo(f"Oldest request row left: {left}")
    if days < MONTH_DAYS:
        click.echo(
            f"Warning: rows younger than {MONTH_DAYS} days rebuild the monthly token and "
            "budget counters after a restart; this month's counts may now start lower.",
            err=True,
        )


@group.command("reconcile")
@click.option(
    "--all",
    "everything",
    is_flag=True,
    help="Also ask about rows whose next attempt is not due yet.",
)
def usage_reconcile(everything: bool) -> None:
    """Run one reconciliation pass: estimated costs (OpenRouter streams cut before their
    usage) fetched from the upstream's generation endpoint; prints what it did (for
    cron). The usage writer process does the same every few seconds under gunicorn."""
    app_runtime = runtime()
    client = generation_client(app_runtime.settings)
    if client is None:
        click.echo("No upstream URL is set (the demo upstream has no generation endpoint).")
        return
    try:
        # the limits' counters take the corrections too, where this process reaches them
        # (Redis; the instance's counter file belongs to the running server's processes)
        report = reconcile_pass(
            app_runtime.sessions,
            client,
            due_only=not everything,
            on_reconciled=partial(correct_counters, app_runtime.limits),
        )
    finally:
        client.close()
    for line in report.lines:
        click.echo(line)
    click.echo(f"Estimated costs: {report.summary()}.")
