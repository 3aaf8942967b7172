"""Console: the audit log, filterable by kind of change and by who made it."""

from __future__ import annotations

from flask import Blueprint, request

from blueprints.console.base import get_db, money, page_number, render, shown
from tally.audit import KINDS, list_audit
from tally.limits.policy import BUDGET_FIELDS
from tally.usage.price_table import FIELDS as PRICE_FIELDS


def register(bp: Blueprint) -> None:
    """The audit log's route and the ``audit_value`` filter on the console blueprint."""
    bp.get("/audit")(audit_list)
    bp.add_app_template_filter(audit_value, "audit_value")


def audit_value(value, name: str, action: str) -> str:
    """A value of an audit entry's change as the console shows it elsewhere: budgets and
    prices as money, everything else as words (:func:`shown`)."""
    amount = isinstance(value, int | float) and not isinstance(value, bool)
    if amount and (name in BUDGET_FIELDS or (action.startswith("price.") and name in PRICE_FIELDS)):
        return money(value)
    return shown(value)


def audit_list():
    """Config changes, key and operator changes, identity lookups: newest first."""
    kind = request.args.get("kind", "")
    who = request.args.get("actor", "")
    entries = list_audit(get_db(), kind, who, page_number())
    return render(
        "audit/page.html",
        "audit/_entries.html",
        entries=entries,
        kinds=KINDS,
        form={"kind": kind if kind in KINDS else "", "actor": who},
    )
