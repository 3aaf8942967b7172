"""More ``flask --app app usage …`` commands (the group is blueprints/cli.py's
``usage_cli``; each command is self-contained)."""

from __future__ import annotations

import click
from flask import current_app

from blueprints.cli import usage_cli
from tally.gateway import Gateway
from tally.services.reconcile import generation_client, reconcile_pass


@usage_cli.command("reconcile")
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
    gateway: Gateway = current_app.extensions["tally"]
    client = generation_client(gateway.settings)
    if client is None:
        click.echo("No upstream URL is set (the demo upstream has no generation endpoint).")
        return
    try:
        report = reconcile_pass(gateway.sessions, client, due_only=not everything)
    finally:
        client.close()
    for line in report.lines:
        click.echo(line)
    click.echo(f"Estimated costs: {report.summary()}.")
