"""The operator console (HTML, HTMX): one module per page, each with a ``register(bp)``
that puts its views on the blueprint :func:`blueprint` builds; ``base`` holds what the
views share (login, the request's session, rendering, the error answers)."""

from __future__ import annotations

from flask import Blueprint

from blueprints.console import (
    audit,
    base,
    config,
    dashboard,
    identities,
    idp,
    keys,
    limits,
    operators,
    prices,
    requests,
    sinks,
    usage,
)

# In the order of the navigation (base.NAVIGATION); prices are a part of usage.
PAGES = (
    dashboard,
    config,
    identities,
    usage,
    requests,
    prices,
    keys,
    idp,
    limits,
    sinks,
    audit,
    operators,
)


def blueprint() -> Blueprint:
    """The ``console`` blueprint: its hooks, then every page's views."""
    bp = Blueprint("console", __name__)
    base.register(bp)
    for page in PAGES:
        page.register(bp)
    return bp
