"""Console: the identity provider end-user tokens are verified against — the form
(admins change it; audited) and a "test a token" box that says what Tally would conclude
from a pasted token, without storing or logging it."""

from __future__ import annotations

from flask import Blueprint, flash, request

from blueprints.console.base import actor as current_actor
from blueprints.console.base import back_to, get_db, is_htmx, on_domain_error, render, runtime
from tally.verification.idp import active_idp, save_idp, try_token
from tally.verification.idp_config import FIELDS

PAGE, PANEL, VERDICT = "idp/page.html", "idp/_panel.html", "idp/_verdict.html"
MAX_TOKEN_FIELD = 16 * 1024


def register(bp: Blueprint) -> None:
    """The identity provider's routes on the console blueprint ``bp``."""
    bp.get("/idp")(idp_page)
    bp.post("/idp")(idp_save)
    bp.post("/idp/test")(idp_test)


def _typed() -> dict[str, str]:
    return {name: request.form[name] for name in FIELDS if name in request.form}


def _context(values: dict[str, str] | None = None, **extra) -> dict:
    current = active_idp(get_db())
    return {"current": current, "values": {**current.as_fields(), **(values or {})}, **extra}


def idp_page():
    """The identity provider as a form, and the token test box."""
    return render(PAGE, PANEL, **_context())


@on_domain_error(PAGE, PANEL, lambda: _context(_typed()))
def idp_save():
    """Save the identity provider (audited); it applies everywhere within a second."""
    save_idp(get_db(), _typed(), current_actor())
    message = "Saved the identity provider."
    if not is_htmx():
        flash(message)
        return back_to("console.idp_page")
    return render(PAGE, PANEL, **_context(message=message))


def idp_test():
    """What Tally concludes from a pasted token (never stored, logged nor echoed back)."""
    token = request.form.get("token", "")[:MAX_TOKEN_FIELD]
    origin = request.form.get("origin", "")[:255]
    verdict = try_token(get_db(), runtime().key_sets, token, origin)
    if not is_htmx():
        return render(PAGE, **_context(verdict=verdict, origin=origin))
    return render(VERDICT, verdict=verdict)
