"""Console: admin API tokens (for ``/admin/api/…``), linked from the API keys page —
admins create them (the token is shown once) and revoke them; support sees the list."""

from __future__ import annotations

from flask import abort, flash, request

from blueprints.console_base import actor, back_to, bp, get_db, is_htmx, on_domain_error, render
from tally.keys.admin_tokens import (
    create_admin_token,
    get_admin_token,
    list_admin_tokens,
    revoke_admin_token,
)

PAGE, PANEL = "keys/admin_tokens.html", "keys/_admin_tokens.html"


def _form_again() -> dict:
    return {"tokens": list_admin_tokens(get_db()), "form": {"name": request.form.get("name", "")}}


@bp.get("/keys/admin-tokens")
def keys_admin_tokens():
    """Every admin API token: prefix, creation, last use, status."""
    return render(PAGE, PANEL, tokens=list_admin_tokens(get_db()), form={})


@bp.post("/keys/admin-tokens")
@on_domain_error(PAGE, PANEL, _form_again)
def keys_admin_token_create():
    """Mint an admin API token; its secret is shown this once."""
    db = get_db()
    token, secret = create_admin_token(db, request.form.get("name", ""), actor())
    # Rendered, not redirected: the secret must never sit in a cookie or a URL.
    tokens = list_admin_tokens(db)
    return render(PAGE, PANEL, 201, tokens=tokens, form={}, created=token, secret=secret)


@bp.post("/keys/admin-tokens/<int:token_id>/revoke")
@on_domain_error(PAGE, PANEL, lambda: {"tokens": list_admin_tokens(get_db()), "form": {}})
def keys_admin_token_revoke(token_id: int):
    """Revoke an admin API token: the admin API refuses it from the next request on."""
    db = get_db()
    token = get_admin_token(db, token_id)
    if token is None:
        abort(404, "No such admin API token.")
    revoke_admin_token(db, token, actor())
    message = f"Revoked admin API token {token.name!r}."
    if not is_htmx():
        flash(message)
        return back_to("console.keys_admin_tokens")
    return render(PAGE, PANEL, tokens=list_admin_tokens(db), form={}, message=message)
