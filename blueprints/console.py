"""The operator console (HTML, HTMX): the dashboard lives here; each other area has its
own module, imported below so its views join :data:`bp`."""

from __future__ import annotations

from blueprints import (  # noqa: F401  (each module registers its views on bp)
    console_audit,
    console_config,
    console_erasure,
    console_identities,
    console_idp,
    console_keys,
    console_limits,
    console_operators,
    console_prices,
    console_usage,
)
from blueprints.console_base import bp, get_db, render
from tally.db import utcnow
from tally.services.reports import dashboard as dashboard_report

__all__ = ["bp"]


@bp.get("/")
def dashboard():
    """Today's and the last 30 days' requests, tokens, cost and errors; the top users."""
    return render("dashboard/page.html", report=dashboard_report(get_db(), utcnow()))
