"""Console: the price table (``/usage/prices``) — what each model costs per million
prompt, completion and cached prompt tokens, used when the upstream reports no cost.
Admins add, change and remove prices (audited); support sees the table."""

from __future__ import annotations

from flask import Blueprint, request

from blueprints.console.base import actor, changed, get_db, on_domain_error, render
from tally.audit import recent_audit
from tally.usage.price_table import (
    FIELDS,
    list_prices,
    parse_model,
    parse_price,
    remove_price,
    set_price,
)
from tally.usage.reconcile import awaiting

PAGE, PANEL = "prices/page.html", "prices/_panel.html"
AUDIT_ENTRIES = 10


def register(bp: Blueprint) -> None:
    """The price table's routes on the console blueprint ``bp``."""
    bp.get("/usage/prices")(prices_page)
    bp.post("/usage/prices")(prices_set)
    bp.post("/usage/prices/remove")(prices_remove)


def _context(**extra):
    db = get_db()
    audit = recent_audit(db, "price.", AUDIT_ENTRIES)
    context = {"prices": list_prices(db), "audit": audit, "awaiting": awaiting(db), "form": {}}
    return context | extra


def _typed() -> dict[str, str]:
    return {name: request.form.get(name, "").strip() for name in ("model", *FIELDS)}


def _panel(**extra):
    return render(PAGE, PANEL, **_context(**extra))


def _done(message: str):
    return changed(message, "console.prices_page", _panel)


def prices_page():
    """The price table, and its recent changes."""
    return render(PAGE, PANEL, **_context())


@on_domain_error(PAGE, PANEL, lambda: _context(form=_typed()))
def prices_set():
    """Add a model's prices or change them (cached blank: the prompt price)."""
    form = _typed()
    model = parse_model(form["model"])
    prompt = parse_price("prompt", form["prompt"])
    completion = parse_price("completion", form["completion"])
    cached = parse_price("cached", form["cached"], optional=True)
    set_price(get_db(), model, prompt, completion, cached, actor())
    return _done(f"Saved the prices of {model}.")


@on_domain_error(PAGE, PANEL, _context)
def prices_remove():
    """Remove a model from the price table."""
    model = request.form.get("model", "")
    remove_price(get_db(), model, actor())
    return _done(f"Removed the prices of {model}.")
