"""Console: the audit log, filterable by kind of change and by who made it."""

from __future__ import annotations

from flask import Blueprint, request

from blueprints.console.base import get_db, page_number, render
from tally.audit import KINDS, list_audit


def register(bp: Blueprint) -> None:
    """The audit log's route on the console blueprint ``bp``."""
    bp.get("/audit")(audit_list)


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
