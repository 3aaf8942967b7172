"""``flask --app app limits …``: message quotas, rate limits and budgets (show, set,
unset, reset)."""

from __future__ import annotations

import click
from flask.cli import AppGroup

from blueprints.cli.common import CLI_ACTOR, fail, session_scope
from tally.limits.policy import format_policy, parse_assignments, parse_scope, parse_tier_key
from tally.limits.policy_store import (
    policy_lines,
    reset_user,
    set_policy,
    set_tier_key,
    unseen_user_warning,
    unset_policy,
)

group = AppGroup("limits", help="Message quotas, rate limits and budgets.")


@group.command("show")
def limits_show() -> None:
    """Every policy, one ``SCOPE FIELD=VALUE …`` line each, then ``tier_key=…``."""
    with session_scope() as session:
        for line in policy_lines(session):
            click.echo(line)


@group.command("set")
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
        fields = set_policy(session, scope, parse_assignments(assignments), CLI_ACTOR)
        warning = unseen_user_warning(session, parse_scope(scope))
    click.echo(format_policy(parse_scope(scope), fields))
    if warning:
        click.echo(warning, err=True)


@group.command("unset")
@click.argument("scope")
def limits_unset(scope: str) -> None:
    """Drop the policy of SCOPE (an override, a tier, a key's policy)."""
    with session_scope() as session:
        unset_policy(session, scope, CLI_ACTOR)
    click.echo(f"Removed the policy of {scope}.")


@group.command("reset")
@click.argument("scope")
def limits_reset(scope: str) -> None:
    """Clear ``user:INTERNAL_ID``'s counters now."""
    with session_scope() as session:
        reset_user(session, scope, CLI_ACTOR)
    click.echo(f"Reset the counters of {scope}.")
