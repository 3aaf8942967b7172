"""API keys in the console: create (shown once), bind, revoke, and the API's answer."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from tally.models import ApiKey, AuditEntry
from tests.helpers.console import SECRET, text


def api_status(client, secret: str) -> int:
    return client.get("/v1/models", headers={"Authorization": f"Bearer {secret}"}).status_code


@pytest.mark.parametrize("htmx", [True, False])
def test_create_shows_the_key_once_and_it_works(admin, client, db, htmx):
    response = admin.post("/keys", {"name": "web", "user": ""}, htmx=htmx)
    assert response.status_code == 201
    page = text(response)
    secret = SECRET.search(page).group(1)
    assert "it is not shown again" in page
    if htmx:
        assert page.lstrip().startswith('<div id="keys-panel"')
    assert api_status(client, secret) == 200
    assert secret not in text(admin.get("/keys"))  # never again
    key = db.scalars(select(ApiKey)).one()
    assert key.name == "web" and key.created_by == admin.email and key.bound_user_id is None
    entry = db.scalars(select(AuditEntry).where(AuditEntry.action == "key.create")).one()
    assert entry.actor == admin.email and entry.after["name"] == "web"


def test_create_bound_to_a_user(admin, db):
    response = admin.post("/keys", {"name": "mobile", "user": "user-42"}, htmx=True)
    assert response.status_code == 201
    key = db.scalars(select(ApiKey)).one()
    assert key.bound_user.external_id == "user-42"
    assert ">user-42</code>" in text(admin.get("/keys"))


@pytest.mark.parametrize(
    "form,message",
    [
        ({"name": ""}, "a key name must be"),
        ({"name": "x" * 101}, "a key name must be"),
        ({"name": "dup"}, "already exists"),
        ({"name": "long-user", "user": "u" * 256}, "an end user id must be 1 to 255"),
    ],
)
def test_bad_key_form_is_a_422_message(admin, form, message):
    admin.post("/keys", {"name": "dup"})
    response = admin.post("/keys", form, htmx=True)
    assert response.status_code == 422
    assert message in text(response)
    assert 'id="new-key"' not in text(response)
    if form.get("user"):
        assert form["user"] in text(response)  # nothing typed is lost


def test_the_form_and_the_cli_refuse_a_long_user_alike(admin, runner, db):
    """One rule (create_api_key), one message, whichever way a key is minted."""
    message = "an end user id must be 1 to 255 characters"
    page = admin.post("/keys", {"name": "web", "user": "u" * 256}, htmx=True)
    assert page.status_code == 422 and message in text(page)
    command = runner.invoke(args=["keys", "create", "cli", "--user", "u" * 256])
    assert (command.exit_code, command.output) == (2, f"Error: {message}\n")
    assert db.scalars(select(ApiKey)).all() == []


def test_revoke_and_the_api_refuses_the_key(admin, client, db, make_key):
    secret = make_key("old")
    key_id = db.scalars(select(ApiKey.id).where(ApiKey.name == "old")).one()
    assert api_status(client, secret) == 200
    response = admin.post(f"/keys/{key_id}/revoke", htmx=True)
    assert response.status_code == 200
    assert "Revoked key &#39;old&#39;." in text(response)
    assert api_status(client, secret) == 401
    entry = db.scalars(select(AuditEntry).where(AuditEntry.action == "key.revoke")).one()
    assert (entry.actor, entry.target) == (admin.email, "old")
    assert entry.before == {"revoked": False} and entry.after == {"revoked": True}


def test_revoke_without_htmx_redirects_back(admin, make_key, db):
    make_key("old")
    key_id = db.scalars(select(ApiKey.id)).one()
    response = admin.post(f"/keys/{key_id}/revoke")
    assert response.status_code == 303
    assert "revoked" in text(admin.get("/keys"))


def test_revoke_of_a_missing_key_is_404(admin):
    assert admin.post("/keys/9999/revoke").status_code == 404


def test_support_cannot_create_or_revoke(support, make_key, db, client):
    secret = make_key("kept")
    key_id = db.scalars(select(ApiKey.id)).one()
    assert support.get("/keys").status_code == 200
    assert support.post("/keys", {"name": "sneaky"}).status_code == 403
    assert support.post(f"/keys/{key_id}/revoke", htmx=True).status_code == 403
    assert api_status(client, secret) == 200
    assert db.scalars(select(ApiKey.name)).all() == ["kept"]


def test_missing_csrf_is_refused(admin, db):
    assert admin.post("/keys", {"name": "nocsrf"}, csrf=False).status_code == 400
    assert db.scalars(select(ApiKey)).first() is None
