"""``flask --app app keys …``: Tally API keys (create, revoke)."""

from __future__ import annotations

import click
from flask.cli import AppGroup

from blueprints.cli.common import CLI_ACTOR, fail, session_scope
from tally.keys.api_keys import create_api_key, revoke_api_key

group = AppGroup("keys", help="Tally API keys.")


@group.command("create")
@click.argument("name")
@click.option("--user", "user", default=None, help="Bind the key to this end user's id.")
@click.option(
    "--user-token",
    is_flag=True,
    help="Calls need a verified end-user token (X-Tally-User-Token); safe in a browser.",
)
@click.option(
    "--origin", "origins", multiple=True, help="A browser origin that gets CORS (repeatable)."
)
def keys_create(name: str, user: str | None, user_token: bool, origins: tuple[str, ...]) -> None:
    """Create a key; the key itself is printed alone on the last line, once."""
    if user is not None and user_token:
        fail("--user and --user-token exclude each other")
    with session_scope() as session:
        key, raw = create_api_key(
            session, name, CLI_ACTOR, bound_external_id=user, user_token=user_token, origins=origins
        )
        allowed = list(key.origins or ())
    bound = f", bound to end user {user}" if user else ""
    bound += ", needs end-user tokens" if user_token else ""
    bound += f", origins {' '.join(allowed)}" if allowed else ""
    click.echo(f"Created key {key.name!r}{bound}. Copy it now: it is not shown again.")
    click.echo(raw)


@group.command("revoke")
@click.argument("name")
def keys_revoke(name: str) -> None:
    """Revoke a key; it stops working at once."""
    with session_scope() as session:
        revoke_api_key(session, name, CLI_ACTOR)
    click.echo(f"Revoked key {name!r}.")
