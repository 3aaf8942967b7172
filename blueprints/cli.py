"""The ``flask --app app …`` commands (PRODUCT.md's CLI). They parse, call a service and
print; a bad command, field or value ends with a one-line message and exit status 2."""

from __future__ import annotations

from contextlib import contextmanager

import click
from flask import Flask, current_app
from flask.cli import AppGroup, with_appcontext

from tally import schema
from tally.demo import seed as seed_service
from tally.end_users.directory import trace_identifier
from tally.errors import InvalidInput
from tally.keys.api_keys import create_api_key, revoke_api_key
from tally.limits.policy import parse_assignments as parse_limit_fields
from tally.limits.policy import parse_tier_key
from tally.limits.policy_store import (
    policy_lines,
    reset_user,
    set_policy,
    set_tier_key,
    unset_policy,
)
from tally.operators.accounts import ROLES, create_operator
from tally.runtime.process import Runtime
from tally.tracking.config import FIELDS
from tally.tracking.store import active_config, save_config
from tally.verification.idp import active_idp, save_idp
from tally.verification.idp_config import FIELDS as IDP_FIELDS

CLI_ACTOR = "cli"

db_cli = AppGroup("db", help="Database schema (alembic migrations).")
keys_cli = AppGroup("keys", help="Tally API keys.")
operators_cli = AppGroup("operators", help="Console operators.")
config_cli = AppGroup("config", help="The tracking config.")
idp_cli = AppGroup("idp", help="The identity provider end-user tokens are verified against.")
dev_cli = AppGroup("dev", help="Tools for trying Tally out.")
limits_cli = AppGroup("limits", help="Message quotas, rate limits and budgets.")


def register(app: Flask) -> None:
    """Attach every command group to ``app``."""
    from blueprints.cli_usage import usage_cli  # it uses this module's helpers

    groups = (db_cli, keys_cli, operators_cli, config_cli, idp_cli, dev_cli, limits_cli, usage_cli)
    for group in groups:
        app.cli.add_command(group)
    app.cli.add_command(trace)
    # imported here: cli_users builds on this module's session_scope
    from blueprints.cli_users import users_cli

    app.cli.add_command(users_cli)


def fail(message: str) -> None:
    """Print one line to stderr and exit with status 2."""
    click.echo(f"Error: {message}", err=True)
    raise SystemExit(2)


@contextmanager
def session_scope():
    """A session for one command; a refused use case (InvalidInput) is its one-line error
    and exit status 2, with nothing of it kept."""
    runtime: Runtime = current_app.extensions["tally"]
    with runtime.sessions() as session:
        try:
            yield session
        except InvalidInput as exc:
            session.rollback()
            fail(str(exc))


@db_cli.command("upgrade")
@click.argument("revision", default="head")
def db_upgrade(revision: str) -> None:
    """Apply the migrations (the only way the schema is made)."""
    schema.upgrade(current_app.extensions["tally"].engine, revision)
    click.echo(f"Database upgraded to {revision}.")


@keys_cli.command("create")
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
    if user is not None and not 1 <= len(user) <= 255:
        fail("--user must be 1 to 255 characters")
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


@keys_cli.command("revoke")
@click.argument("name")
def keys_revoke(name: str) -> None:
    """Revoke a key; it stops working at once."""
    with session_scope() as session:
        revoke_api_key(session, name, CLI_ACTOR)
    click.echo(f"Revoked key {name!r}.")


@operators_cli.command("create")
@click.argument("email")
@click.option("--role", required=True, type=click.Choice(ROLES))
@click.option("--password", required=True)
def operators_create(email: str, role: str, password: str) -> None:
    """Create a console operator."""
    with session_scope() as session:
        operator = create_operator(session, email, role, password, CLI_ACTOR)
    click.echo(f"Created {operator.role} {operator.email}.")


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


@config_cli.command("show")
def config_show() -> None:
    """The active tracking config, one field=value line per field."""
    with session_scope() as session:
        config = active_config(session)
    for name, value in config.as_fields().items():
        click.echo(f"{name}={value}")


@config_cli.command("set")
@click.argument("assignments", nargs=-1, required=True)
def config_set(assignments: tuple[str, ...]) -> None:
    """Save a new revision, e.g. ``config set hash_mode=sha256 prefix=acme``."""
    fields = parse_assignments(assignments, FIELDS)
    with session_scope() as session:
        config = active_config(session).with_fields(fields)
        revision = save_config(session, config, CLI_ACTOR)
    click.echo(f"Saved revision {revision.id}.")
    for name, value in config.as_fields().items():
        click.echo(f"{name}={value}")


def parse_assignments(assignments: tuple[str, ...], known: tuple[str, ...]) -> dict[str, str]:
    """``FIELD=VALUE`` arguments as a dict; a malformed one or an unknown field fails."""
    fields: dict[str, str] = {}
    for item in assignments:
        name, sep, value = item.partition("=")
        if not sep:
            fail(f"expected FIELD=VALUE, got {item!r}")
        if name not in known:
            fail(f"unknown field {name!r}; fields are {', '.join(known)}")
        fields[name] = value
    return fields


@idp_cli.command("show")
def idp_show() -> None:
    """The identity provider, one field=value line per field (empty when not set)."""
    with session_scope() as session:
        config = active_idp(session)
    for name, value in config.as_fields().items():
        click.echo(f"{name}={value}")


@idp_cli.command("set")
@click.argument("assignments", nargs=-1, required=True)
def idp_set(assignments: tuple[str, ...]) -> None:
    """Set the identity provider, e.g. ``idp set issuer=https://clerk.example.com
    jwks_url=https://clerk.example.com/.well-known/jwks.json``; fields not given keep
    their value (``audience=`` clears the audience)."""
    fields = parse_assignments(assignments, IDP_FIELDS)
    with session_scope() as session:
        config = save_idp(session, fields, CLI_ACTOR)
    click.echo("Saved the identity provider.")
    for name, value in config.as_fields().items():
        click.echo(f"{name}={value}")


@dev_cli.command("seed")
@click.option("--requests", "requests_", default=1000, type=click.IntRange(0, 5_000_000))
@click.option("--users", default=50, type=click.IntRange(1, 1_000_000))
@click.option("--days", default=30, type=click.IntRange(1, 365))
def dev_seed(requests_: int, users: int, days: int) -> None:
    """Fill the database with realistic demo traffic, marked as demo data."""
    runtime: Runtime = current_app.extensions["tally"]
    with session_scope() as session:
        made = seed_service.seed_demo_traffic(
            session, runtime.hash_key, requests=requests_, users=users, days=days
        )
    click.echo(f"Seeded {made.requests} demo requests for {made.users} demo users.")


@limits_cli.command("show")
def limits_show() -> None:
    """Every policy, one ``SCOPE FIELD=VALUE …`` line each, then ``tier_key=…``."""
    with session_scope() as session:
        for line in policy_lines(session):
            click.echo(line)


@limits_cli.command("set")
@click.argument("scope")
@click.argument("assignments", nargs=-1)
def limits_set(scope: str, assignments: tuple[str, ...]) -> None:
    """``limits set SCOPE FIELD=VALUE …`` or ``limits set tier_key=METADATA_KEY``."""
    with session_scope() as session:
        if scope.startswith("tier_key="):
            if assignments:
                fail("limits set tier_key=KEY takes nothing else")
            key = parse_tier_key(scope.partition("=")[2])
            set_tier_key(session, key, CLI_ACTOR)
            click.echo(f"tier_key={key}")
            return
        fields = parse_limit_fields(assignments)
        set_policy(session, scope, fields, CLI_ACTOR)
        line = next(li for li in policy_lines(session) if li.split(" ", 1)[0] == scope)
    click.echo(line)


@limits_cli.command("unset")
@click.argument("scope")
def limits_unset(scope: str) -> None:
    """Drop the policy of SCOPE (an override, a tier, a key's policy)."""
    with session_scope() as session:
        unset_policy(session, scope, CLI_ACTOR)
    click.echo(f"Removed the policy of {scope}.")


@limits_cli.command("reset")
@click.argument("scope")
def limits_reset(scope: str) -> None:
    """Clear ``user:INTERNAL_ID``'s counters now."""
    with session_scope() as session:
        reset_user(session, scope, CLI_ACTOR)
    click.echo(f"Reset the counters of {scope}.")
