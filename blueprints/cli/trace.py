"""``flask --app app trace IDENTIFIER``: the internal user behind an upstream identifier,
or every user behind it when it is shared (a collision)."""

from __future__ import annotations

import click
from flask.cli import with_appcontext

from blueprints.cli.common import session_scope
from tally.end_users.directory import shared_note, trace_users
from tally.models import UpstreamIdentifier


@click.command("trace")
@with_appcontext
@click.argument("identifier")
def trace(identifier: str) -> None:
    """Print the internal user behind an upstream identifier: one block of field=value
    lines; for an identifier sent for several users (a collision), a line saying so, then
    one block per user, first sent first, a blank line between blocks."""
    with session_scope() as session:
        found = trace_users(session, identifier)
        if not found:
            click.echo(
                f"Error: not found: no end user was ever sent as {identifier!r}"
                " (or that user was erased)",
                err=True,
            )
            raise SystemExit(1)
        note = shared_note(found)
        if note:
            click.echo(
                f"collision: {found[0].identifier} is {note}; one block per user follows,"
                " first sent first"
            )
        for mapping in found:
            if note:
                click.echo("")
            _echo_block(mapping)


def _echo_block(found: UpstreamIdentifier) -> None:
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
