"""Console: sinks (``/sinks``), where usage events and limit alerts go — each with its
backlog, oldest undelivered event, last error and parked events; admins add one (a
generated webhook secret is shown once), remove one, replay a day onward; support
looks."""

from __future__ import annotations

from flask import Blueprint, abort, flash, request

from blueprints.console.base import (
    actor,
    back_to,
    get_db,
    is_htmx,
    on_domain_error,
    render,
    runtime,
)
from tally.models import Sink
from tally.sinks.admin import KINDS, add_sink, list_sinks, remove_sink, replay_sink

PAGE, PANEL = "sinks/page.html", "sinks/_panel.html"
FIELDS = ("name", "kind", "url", "secret", "events")


def register(bp: Blueprint) -> None:
    """The sinks' routes on the console blueprint ``bp``."""
    bp.get("/sinks")(sinks_list)
    bp.post("/sinks")(sinks_add)
    bp.post("/sinks/<int:sink_id>/remove")(sinks_remove)
    bp.post("/sinks/<int:sink_id>/replay")(sinks_replay)


def _typed() -> dict[str, str]:
    # the secret is never sent back into the page, even as typed
    return {name: request.form.get(name, "") for name in FIELDS if name != "secret"}


def _context(**extra) -> dict:
    return {"sinks": list_sinks(get_db()), "kinds": KINDS, "form": {}, **extra}


def sinks_list():
    """Every sink and its delivery state."""
    return render(PAGE, PANEL, **_context())


@on_domain_error(PAGE, PANEL, lambda: _context(form=_typed()))
def sinks_add():
    """Add a sink; a webhook's generated secret is shown this once."""
    form = request.form
    events = ",".join(form.getlist("events")) or None
    sink, secret = add_sink(
        get_db(),
        runtime().settings.secret_key,
        form.get("name", ""),
        form.get("kind", ""),
        form.get("url", ""),
        actor(),
        form.get("secret") or None,
        events,
    )
    # Rendered, not redirected: the secret must never sit in a cookie or a URL.
    message = f"Added sink {sink.name!r}."
    return render(PAGE, PANEL, 201, **_context(created=sink, secret=secret, message=message))


def _sink(sink_id: int) -> Sink:
    sink = get_db().get(Sink, sink_id)
    if sink is None:
        abort(404, "No such sink.")
    return sink


def _done(message: str):
    if not is_htmx():
        flash(message)
        return back_to("console.sinks_list")
    return render(PAGE, PANEL, **_context(message=message))


@on_domain_error(PAGE, PANEL, _context)
def sinks_remove(sink_id: int):
    """Remove a sink; its undelivered events are dropped."""
    sink = _sink(sink_id)
    name = sink.name
    dropped = remove_sink(get_db(), name, actor())
    return _done(f"Removed sink {name!r} ({dropped} undelivered events dropped).")


@on_domain_error(PAGE, PANEL, _context)
def sinks_replay(sink_id: int):
    """Queue a day's calls and every later one for the sink again (same event ids)."""
    sink = _sink(sink_id)
    name = sink.name
    count = replay_sink(get_db(), name, request.form.get("from", ""), actor())
    runtime().usage.wake_deliveries()  # an app with no call yet starts its loop now
    return _done(f"Queued {count} events for sink {name!r}.")
