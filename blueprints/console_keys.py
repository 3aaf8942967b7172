"""Console: Tally API keys — list, create (the key is shown once), revoke."""

from __future__ import annotations

from flask import abort, flash, request

from blueprints.console_base import actor, back_to, bp, get_db, is_htmx, on_domain_error, render
from tally.keys.api_keys import get_api_key, list_api_keys, mint_api_key, revoke_api_key

PAGE, PANEL = "keys/page.html", "keys/_panel.html"


def _typed() -> dict[str, str]:
    form = request.form
    return {
        "name": form.get("name", ""),
        "user": form.get("user", ""),
        "user_token": "on" if form.get("user_token") else "",
        "origins": form.get("origins", ""),
    }


def _form_again() -> dict:
    return {"keys": list_api_keys(get_db()), "form": _typed()}


@bp.get("/keys")
def keys_list():
    """Every key: prefix, bound user, creation, last use, status."""
    return render(PAGE, PANEL, keys=list_api_keys(get_db()), form={})


@bp.post("/keys")
@on_domain_error(PAGE, PANEL, _form_again)
def keys_create():
    """Mint a key, optionally bound to an end user or needing end-user tokens (with
    browser origins for CORS); its secret is shown this once."""
    db = get_db()
    form = _typed()
    key, secret = mint_api_key(
        db, form["name"], form["user"], actor(), bool(form["user_token"]), form["origins"]
    )
    # Rendered, not redirected: the secret must never sit in a cookie or a URL.
    return render(PAGE, PANEL, 201, keys=list_api_keys(db), form={}, created=key, secret=secret)


@bp.post("/keys/<int:key_id>/revoke")
@on_domain_error(PAGE, PANEL, lambda: {"keys": list_api_keys(get_db()), "form": {}})
def keys_revoke(key_id: int):
    """Revoke a key: the API refuses it from the next request on."""
    db = get_db()
    key = get_api_key(db, key_id)
    if key is None:
        abort(404, "No such key.")
    revoke_api_key(db, key.name, actor())
    message = f"Revoked key {key.name!r}."
    if not is_htmx():
        flash(message)
        return back_to("console.keys_list")
    return render(PAGE, PANEL, keys=list_api_keys(db), form={}, message=message)
