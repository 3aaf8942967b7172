"""The operator console (HTML, HTMX): the dashboard lives here; each other area has its
own module, imported below so its views join :data:`bp`."""

from __future__ import annotations

from datetime import timedelta

from blueprints import (  # noqa: F401  (each module registers its views on bp)
    console_admin_tokens,
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
from tally.reports.dashboard import DEFAULT_RANGE_DAYS
from tally.reports.dashboard import dashboard as dashboard_report
from tally.reports.performance import cache_shares

__all__ = ["bp"]


@bp.get("/")
def dashboard():
    """Today's and the last 30 days' requests, tokens, cost and errors; the top users,
    with the share of their prompt tokens served from the provider's cache."""
    db, today = get_db(), utcnow()
    report = dashboard_report(db, today)
    start = today.date() - timedelta(days=DEFAULT_RANGE_DAYS - 1)
    users = [row.user_id for row in report.top_users if row.user_id]
    cache = cache_shares(db, start, today.date(), users)
    return render("dashboard/page.html", report=report, cache=cache)
