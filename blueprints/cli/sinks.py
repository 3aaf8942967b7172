"""``flask --app app sinks …``: where usage events and limit alerts go (PRODUCT.md, "Usage
events out"): add, list, remove, replay a day onward."""

from __future__ import annotations

import click
from flask.cli import AppGroup

from blueprints.cli.common import CLI_ACTOR, fail, runtime, session_scope
from tally.sinks.admin import KINDS, add_sink, list_sinks, remove_sink, replay_sink

group = AppGroup("sinks", help="Where usage events and limit alerts go.")


@group.command("add")
@click.argument("name")
@click.option("--kind", default=None, help=f"One of {', '.join(KINDS)} (required).")
@click.option(
    "--url", default=None, help="The receiver's base URL (a webhook's own URL; required)."
)
@click.option("--secret", default=None, help="Its secret (a webhook without one gets one).")
@click.option("--events", default=None, help="usage, alerts or usage,alerts (default: usage).")
def sinks_add(name: str, kind: str, url: str, secret: str | None, events: str | None) -> None:
    """Add a sink; a webhook's generated secret is printed alone on the last line, once."""
    if kind is None or url is None:
        fail(f"--kind ({'|'.join(KINDS)}) and --url are required")
    with session_scope() as session:
        sink, made = add_sink(
            session, runtime().settings.secret_key, name, kind, url, CLI_ACTOR, secret, events
        )
        summary = f"Added sink {sink.name!r} ({sink.kind}, {sink.events})."
    if made is None:
        click.echo(summary)
        return
    click.echo(f"{summary} Its signing secret follows; copy it now: it is not shown again.")
    click.echo(made)


@group.command("list")
def sinks_list() -> None:
    """Every sink: kind, events, URL, backlog, oldest undelivered, parked, last error."""
    with session_scope() as session:
        found = list_sinks(session)
        lines = []
        for status in found:
            sink = status.sink
            oldest = status.oldest_undelivered
            line = (
                f"{sink.name}\t{sink.kind}\t{sink.events}\t{status.url}\t"
                f"backlog={status.backlog}\t"
                f"oldest={oldest.isoformat(timespec='seconds') + 'Z' if oldest else '-'}\t"
                f"parked={status.parked}\tlast_error={sink.last_error or '-'}"
            )
            lines.append(line)
    if not lines:
        click.echo("No sinks.")
    for line in lines:
        click.echo(line)


@group.command("remove")
@click.argument("name")
def sinks_remove(name: str) -> None:
    """Remove a sink; its undelivered events are dropped."""
    with session_scope() as session:
        dropped = remove_sink(session, name, CLI_ACTOR)
    click.echo(f"Removed sink {name!r} ({dropped} undelivered events dropped).")


@group.command("replay")
@click.argument("name")
@click.option("--from", "day", default=None, help="The first day (UTC), YYYY-MM-DD (required).")
def sinks_replay(name: str, day: str) -> None:
    """Send that day's calls and every later one to the sink again, under the same event
    ids (a receiver that dedupes counts each once)."""
    if day is None:
        fail("--from YYYY-MM-DD is required")
    with session_scope() as session:
        count = replay_sink(session, name, day, CLI_ACTOR)
    click.echo(f"Queued {count} events for sink {name!r} from {day}.")
