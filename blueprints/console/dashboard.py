"""Console: the dashboard (``/``), the console's front page."""

from __future__ import annotations

from datetime import timedelta

from flask import Blueprint

from blueprints.console.base import get_db, render
from tally.db import utcnow
from tally.reports.dashboard import DEFAULT_RANGE_DAYS
from tally.reports.dashboard import dashboard as dashboard_report
from tally.reports.performance import cache_shares


def register(bp: Blueprint) -> None:
    """The dashboard's route on the console blueprint ``bp``."""
    bp.get("/")(dashboard)


def dashboard():
    """Today's and the last 30 days' requests, tokens, cost and errors; the top users,
    with the share of their prompt tokens served from the provider's cache."""
    db, today = get_db(), utcnow()
    report = dashboard_report(db, today)
    start = today.date() - timedelta(days=DEFAULT_RANGE_DAYS - 1)
    users = [row.user_id for row in report.top_users if row.user_id]
    cache = cache_shares(db, start, today.date(), users)
    return render("dashboard/page.html", report=report, cache=cache)
