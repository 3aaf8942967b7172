"""``flask --app app db …``: the database schema."""

from __future__ import annotations

import click
from flask.cli import AppGroup

from blueprints.cli.common import runtime
from tally import schema

group = AppGroup("db", help="Database schema (alembic migrations).")


@group.command("upgrade")
@click.argument("revision", default="head")
def db_upgrade(revision: str) -> None:
    """Apply the migrations (the only way the schema is made)."""
    schema.upgrade(runtime().engine, revision)
    click.echo(f"Database upgraded to {revision}.")
