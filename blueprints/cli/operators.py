"""``flask --app app operators …``: console operators."""

from __future__ import annotations

import click
from flask.cli import AppGroup

from blueprints.cli.common import CLI_ACTOR, session_scope
from tally.operators.accounts import ROLES, create_operator

group = AppGroup("operators", help="Console operators.")


@group.command("create")
@click.argument("email")
@click.option("--role", required=True, type=click.Choice(ROLES))
@click.option("--password", required=True)
def operators_create(email: str, role: str, password: str) -> None:
    """Create a console operator."""
    with session_scope() as session:
        operator = create_operator(session, email, role, password, CLI_ACTOR)
    click.echo(f"Created {operator.role} {operator.email}.")
