"""Admin API tokens in the console: created by admins (shown once, stored as a hash),
revoked (then refused by the admin API), audited; support sees them and changes
nothing; bad names are form messages."""

from __future__ import annotations

import hashlib
import re

import pytest
from sqlalchemy import select

from tally.keys.admin_tokens import create_admin_token
from tally.models import AdminToken, AuditEntry
from tests.helpers.console import text

SECRET = re.compile(r'id="new-admin-token" readonly value="(tadm_[^"]+)"')
PAGE = "/keys/admin-tokens"


def admin_api_status(client, secret: str) -> int:
    headers = {"Authorization": f"Bearer {secret}"}
    return client.get("/admin/api/usage?group_by=model", headers=headers).status_code


@pytest.mark.parametrize("htmx", [True, False])
def test_create_shows_the_token_once_and_stores_only_its_hash(admin, client, db, htmx):
    response = admin.post(PAGE, {"name": "bi-nightly"}, htmx=htmx)
    assert response.status_code == 201
    page = text(response)
    secret = SECRET.search(page).group(1)
    assert "Admin API token bi-nightly created" in page and "it is not shown again" in page
    if htmx:
        assert page.lstrip().startswith('<div id="admin-tokens-panel"')
    token = db.scalars(select(AdminToken)).one()
    assert token.token_hash == hashlib.sha256(secret.encode()).hexdigest()
    assert token.display_prefix == secret[:12] and token.display_prefix.startswith("tadm_")
    assert (token.name, token.created_by, token.revoked_at) == ("bi-nightly", admin.email, None)
    stored = [getattr(token, column.key) for column in AdminToken.__table__.columns]
    assert not any(secret in str(value) for value in stored)
    assert admin_api_status(client, secret) == 200
    listing = text(admin.get(PAGE))
    assert secret not in listing and f"<code>{secret[:12]}…</code>" in listing
    entry = db.scalars(select(AuditEntry).where(AuditEntry.action == "admin_token.create")).one()
    assert (entry.actor, entry.target) == (admin.email, "bi-nightly")
    assert entry.after == {"name": "bi-nightly", "prefix": secret[:12]}
    assert secret not in str(entry.after)


def test_revoke_then_the_admin_api_refuses_it(admin, client, db):
    secret = SECRET.search(text(admin.post(PAGE, {"name": "kept"}))).group(1)
    with client.application.extensions["tally"].sessions() as session:
        _, old_secret = create_admin_token(session, "older", "test")
    token_id = db.scalars(select(AdminToken.id).where(AdminToken.name == "older")).one()
    assert admin_api_status(client, old_secret) == 200
    response = admin.post(f"{PAGE}/{token_id}/revoke", htmx=True)
    assert response.status_code == 200
    assert "Revoked admin API token &#39;older&#39;." in text(response)
    assert admin_api_status(client, old_secret) == 401
    assert admin_api_status(client, secret) == 200  # the others still work
    entry = db.scalars(select(AuditEntry).where(AuditEntry.action == "admin_token.revoke")).one()
    assert (entry.actor, entry.target) == (admin.email, "older")
    assert entry.before == {"revoked": False} and entry.after == {"revoked": True}
    row = text(admin.get(PAGE)).split('data-token="older"')[1].split("</tr>")[0]
    assert "revoked" in row and "Revoke</button>" not in row


def test_revoke_without_htmx_redirects_back(admin, db):
    admin.post(PAGE, {"name": "old"})
    token_id = db.scalars(select(AdminToken.id)).one()
    response = admin.post(f"{PAGE}/{token_id}/revoke")
    assert response.status_code == 303 and response.headers["Location"].endswith(PAGE)
    assert "Revoked admin API token &#39;old&#39;." in text(admin.get(PAGE))


def test_revoke_of_a_missing_token_is_404(admin):
    assert admin.post(f"{PAGE}/9999/revoke").status_code == 404


@pytest.mark.parametrize(
    "name,message",
    [
        ("", "a token name must be 1 to 100 characters"),
        ("   ", "a token name must be 1 to 100 characters"),
        ("x" * 101, "a token name must be 1 to 100 characters"),
        ("dup", "a token named &#39;dup&#39; already exists"),
    ],
)
def test_bad_names_are_a_422_form_message(admin, db, name, message):
    admin.post(PAGE, {"name": "dup"})
    response = admin.post(PAGE, {"name": name}, htmx=True)
    assert response.status_code == 422
    page = text(response)
    assert message in page and 'aria-invalid="true"' in page
    assert 'id="new-admin-token"' not in page
    assert db.scalars(select(AdminToken.name)).all() == ["dup"]


def test_support_sees_the_list_and_cannot_change_it(support, db, client):
    with client.application.extensions["tally"].sessions() as session:
        _, secret = create_admin_token(session, "kept", "test")
    token_id = db.scalars(select(AdminToken.id)).one()
    page = text(support.get(PAGE))
    assert 'data-token="kept"' in page
    assert "Create a token" not in page and "Revoke</button>" not in page
    assert support.post(PAGE, {"name": "sneaky"}).status_code == 403
    assert support.post(f"{PAGE}/{token_id}/revoke", htmx=True).status_code == 403
    assert db.scalars(select(AdminToken.name)).all() == ["kept"]
    assert db.scalars(select(AdminToken.revoked_at)).one() is None
    assert admin_api_status(client, secret) == 200


def test_missing_csrf_is_refused(admin, db):
    assert admin.post(PAGE, {"name": "nocsrf"}, csrf=False).status_code == 400
    assert db.scalars(select(AdminToken)).first() is None


def test_logged_out_visitors_are_sent_to_login(make_console):
    response = make_console(None).get(PAGE)
    assert response.status_code == 302 and "/login" in response.headers["Location"]


def test_the_keys_page_links_to_the_tokens(admin):
    assert f'href="{PAGE}"' in text(admin.get("/keys"))


def test_the_audit_log_filters_admin_token_changes(admin):
    admin.post(PAGE, {"name": "bi"})
    page = text(admin.get("/audit?kind=admin_token"))
    assert "admin_token.create" in page
    assert 'value="admin_token" selected' in page
