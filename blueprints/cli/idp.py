"""``flask --app app idp …``: the identity provider end-user tokens are verified against
(show, set)."""

from __future__ import annotations

import click
from flask.cli import AppGroup

from blueprints.cli.common import CLI_ACTOR, parse_assignments, session_scope
from tally.verification.idp import active_idp, save_idp
from tally.verification.idp_config import FIELDS

group = AppGroup("idp", help="The identity provider end-user tokens are verified against.")


@group.command("show")
def idp_show() -> None:
    """The identity provider, one field=value line per field (empty when not set)."""
    with session_scope() as session:
        config = active_idp(session)
    for name, value in config.as_fields().items():
        click.echo(f"{name}={value}")


@group.command("set")
@click.argument("assignments", nargs=-1, required=True)
def idp_set(assignments: tuple[str, ...]) -> None:
    """Set the identity provider, e.g. ``idp set issuer=https://clerk.example.com
    jwks_url=https://clerk.example.com/.well-known/jwks.json``; fields not given keep
    their value (``audience=`` clears the audience)."""
    fields = parse_assignments(assignments, FIELDS)
    with session_scope() as session:
        config = save_idp(session, fields, CLI_ACTOR)
    click.echo("Saved the identity provider.")
    for name, value in config.as_fields().items():
        click.echo(f"{name}={value}")
