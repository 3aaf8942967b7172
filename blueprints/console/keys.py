"""Console: Tally API keys — list, create (the key is shown once), revoke — and, linked
from that page, the admin API tokens (for ``/admin/api/…``): admins create them (the
token is shown once) and revoke them; support sees the list."""

from __future__ import annotations

from flask import Blueprint, abort, flash, request

from blueprints.console.base import actor, back_to, get_db, is_htmx, on_domain_error, render
from tally.keys.admin_tokens import (
    create_admin_token,
    get_admin_token,
    list_admin_tokens,
    revoke_admin_token,
)
from tally.keys.api_keys import get_api_key, list_api_keys, mint_api_key, revoke_api_key

PAGE, PANEL = "keys/page.html", "keys/_panel.html"
TOKENS_PAGE, TOKENS_PANEL = "keys/admin_tokens.html", "keys/_admin_tokens.html"


def register(bp: Blueprint) -> None:
    """The API keys' and the admin API tokens' routes on the console blueprint ``bp``."""
    bp.get("/keys")(keys_list)
    bp.post("/keys")(keys_create)
    bp.post("/keys/<int:key_id>/revoke")(keys_revoke)
    bp.get("/keys/admin-tokens")(keys_admin_tokens)
    bp.post("/keys/admin-tokens")(keys_admin_token_create)
    bp.post("/keys/admin-tokens/<int:token_id>/revoke")(keys_admin_token_revoke)


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


def keys_list():
    """Every key: prefix, bound user, creation, last use, status."""
    return render(PAGE, PANEL, keys=list_api_keys(get_db()), form={})


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


def _token_form_again() -> dict:
    return {"tokens": list_admin_tokens(get_db()), "form": {"name": request.form.get("name", "")}}


def keys_admin_tokens():
    """Every admin API token: prefix, creation, last use, status."""
    return render(TOKENS_PAGE, TOKENS_PANEL, tokens=list_admin_tokens(get_db()), form={})


@on_domain_error(TOKENS_PAGE, TOKENS_PANEL, _token_form_again)
def keys_admin_token_create():
    """Mint an admin API token; its secret is shown this once."""
    db = get_db()
    token, secret = create_admin_token(db, request.form.get("name", ""), actor())
    # Rendered, not redirected: the secret must never sit in a cookie or a URL.
    tokens = list_admin_tokens(db)
    return render(
        TOKENS_PAGE, TOKENS_PANEL, 201, tokens=tokens, form={}, created=token, secret=secret
    )


@on_domain_error(
    TOKENS_PAGE, TOKENS_PANEL, lambda: {"tokens": list_admin_tokens(get_db()), "form": {}}
)
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
    return render(TOKENS_PAGE, TOKENS_PANEL, tokens=list_admin_tokens(db), form={}, message=message)
