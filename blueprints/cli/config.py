"""``flask --app app config …``: the tracking config (show, set)."""

from __future__ import annotations

import click
from flask.cli import AppGroup

from blueprints.cli.common import CLI_ACTOR, parse_assignments, session_scope
from tally.end_users.directory import count_end_users
from tally.tracking.collisions import collision_warning
from tally.tracking.config import FIELDS
from tally.tracking.store import active_config, save_config

group = AppGroup("config", help="The tracking config.")


@group.command("show")
def config_show() -> None:
    """The active tracking config, one field=value line per field."""
    with session_scope() as session:
        config = active_config(session)
    for name, value in config.as_fields().items():
        click.echo(f"{name}={value}")


@group.command("set")
@click.argument("assignments", nargs=-1, required=True)
def config_set(assignments: tuple[str, ...]) -> None:
    """Save a new revision, e.g. ``config set hash_mode=sha256 prefix=acme``."""
    fields = parse_assignments(assignments, FIELDS)
    with session_scope() as session:
        config = active_config(session).with_fields(fields)
        revision = save_config(session, config, CLI_ACTOR)
        warning = collision_warning(config, count_end_users(session))
    click.echo(f"Saved revision {revision.id}.")
    for name, value in config.as_fields().items():
        click.echo(f"{name}={value}")
    if warning:  # saved all the same: a warning, not an error
        click.echo(f"Warning: {warning}", err=True)
