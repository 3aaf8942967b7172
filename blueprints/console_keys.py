"""Console: Tally API keys — list, create (the key is shown once), revoke."""

from __future__ import annotations

from flask import abort, flash, request

from blueprints.console_base import actor, back_to, bp, form_error, get_db, is_htmx, render
from tally.services.keyring import get_api_key, list_api_keys, mint_api_key
from tally.services.keys import ApiKeyError, revoke_api_key

PAGE, PANEL = "keys/page.html", "keys/_panel.html"


@bp.get("/keys")
def keys_list():
    """Every key: prefix, bound user, creation, last use, status."""
    return render(PAGE, PANEL, keys=list_api_keys(get_db()), form={})


@bp.post("/keys")
def keys_create():
    """Mint a key, optionally bound to an end user; its secret is shown this once."""
    db = get_db()
    form = {"name": request.form.get("name", ""), "user": request.form.get("user", "")}
    try:
        key, secret = mint_api_key(db, form["name"], form["user"], actor())
    except ApiKeyError as exc:
        return form_error(PAGE, PANEL, str(exc), keys=list_api_keys(db), form=form)
    # Rendered, not redirected: the secret must never sit in a cookie or a URL.
    return render(PAGE, PANEL, 201, keys=list_api_keys(db), form={}, created=key, secret=secret)


@bp.post("/keys/<int:key_id>/revoke")
def keys_revoke(key_id: int):
    """Revoke a key: the API refuses it from the next request on."""
    db = get_db()
    key = get_api_key(db, key_id)
    if key is None:
        abort(404, "No such key.")
    try:
        revoke_api_key(db, key.name, actor())
    except ApiKeyError as exc:
        return form_error(PAGE, PANEL, str(exc), keys=list_api_keys(db), form={})
    message = f"Revoked key {key.name!r}."
    if not is_htmx():
        flash(message)
        return back_to("console.keys_list")
    return render(PAGE, PANEL, keys=list_api_keys(db), form={}, message=message)
