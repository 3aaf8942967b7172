"""``flask --app app users …``: end users. ``users erase INTERNAL_ID`` removes a person's
personal data everywhere and keeps their figures in the totals (tally.privacy.erasure)."""

from __future__ import annotations

import click
from flask.cli import AppGroup

from blueprints.cli.common import CLI_ACTOR, runtime, session_scope
from tally.privacy.erasure import erase_user

group = AppGroup("users", help="End users.")


@group.command("erase")
@click.argument("internal_id")
def users_erase(internal_id: str) -> None:
    """Erase the end user INTERNAL_ID: profile, identifiers, their rows' personal parts,
    their mentions in the audit log; keys bound to them are revoked and renamed
    erased-key-<id>; the totals stay, under an anonymous placeholder."""
    app_runtime = runtime()
    limits = app_runtime.limits
    # this process's own memory holds no server's counters: nothing to clear there
    counters = None if limits.description.startswith("tally+memory") else limits.storage
    with session_scope() as session:
        erased = erase_user(session, internal_id, CLI_ACTOR, app_runtime.hash_key, counters)
    click.echo(f"Erased the end user; the audit log names them as {erased.ref}.")
    click.echo(f"upstream identifiers deleted: {erased.identifiers}")
    click.echo(f"request rows anonymised: {erased.requests} (tokens and cost kept)")
    click.echo(f"audit entries redacted: {erased.audit_entries}")
    renamed = f" (renamed {', '.join(erased.renamed_keys)})" if erased.renamed_keys else ""
    click.echo(f"bound API keys revoked: {erased.keys}{renamed}")
    click.echo(f"limit overrides and resets removed: {erased.limits}")
    click.echo(f"totals kept under placeholder end user #{erased.placeholder_id}")
    if erased.counters_cleared:
        click.echo(f"limit counters cleared in {limits.description}")
    else:
        click.echo("limit counters: not reachable from here; they expire on their own")
