"""``flask --app app trace IDENTIFIER``: the internal user behind an upstream identifier."""

from __future__ import annotations

import click
from flask.cli import with_appcontext

from blueprints.cli.common import session_scope
from tally.end_users.directory import trace_identifier


@click.command("trace")
@with_appcontext
@click.argument("identifier")
def trace(identifier: str) -> None:
    """Print the internal user behind an upstream identifier."""
    with session_scope() as session:
        found = trace_identifier(session, identifier)
        if found is None:
            click.echo(
                f"Error: not found: no end user was ever sent as {identifier!r}"
                " (or that user was erased)",
                err=True,
            )
            raise SystemExit(1)
        user = found.user
        click.echo(f"identifier={found.identifier}")
        click.echo(f"internal_id={user.external_id}")
        if user.display_name:
            click.echo(f"display_name={user.display_name}")
        if user.email:
            click.echo(f"email={user.email}")
        click.echo(f"config_revision={found.revision_id or '-'}")
        click.echo(f"first_seen={found.first_seen:%Y-%m-%d %H:%M:%S}Z")
        click.echo(f"last_seen={found.last_seen:%Y-%m-%d %H:%M:%S}Z")
        click.echo(f"requests={found.request_count}")
