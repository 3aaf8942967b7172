"""The identity provider in the console: the form (admins only, CSRF, audited), the
"test a token" box, the key page's user-token and origins fields, verified end users."""

from __future__ import annotations

import logging
import time

import pytest
from sqlalchemy import select

from tally.models import ApiKey, AuditEntry
from tally.verification.idp import active_idp
from tests.helpers.console import SECRET, text
from tests.helpers.identity_provider import ISSUER


@pytest.fixture
def configured(admin, jwks):
    response = admin.post("/idp", {"issuer": ISSUER, "jwks_url": jwks.url, "user_claim": "sub"})
    assert response.status_code == 303, text(response)
    return jwks


def test_an_admin_sets_the_identity_provider(admin, db, configured):
    config = active_idp(db)
    assert (config.issuer, config.jwks_url) == (ISSUER, configured.url)
    entry = db.scalars(select(AuditEntry).where(AuditEntry.action == "idp.update")).one()
    assert entry.actor == admin.email and entry.after["issuer"] == ISSUER
    assert ISSUER in text(admin.get("/idp"))


def test_a_bad_value_is_the_form_again_with_the_message(admin, db):
    response = admin.post(
        "/idp", {"issuer": ISSUER, "jwks_url": "http://evil.example/jwks", "user_claim": "sub"}
    )
    assert response.status_code == 422
    page = text(response)
    assert "https://" in page and 'value="http://evil.example/jwks"' in page
    assert not active_idp(db).configured


def test_support_tests_a_token_but_cannot_change_the_provider(support, configured):
    page = text(support.get("/idp"))
    assert "Test the token" in page  # the button is there, and it works
    assert 'name="issuer"' in page and " disabled" in page  # the provider's form is not
    assert '<button type="submit" class="primary">Save</button>' not in page
    assert support.post("/idp", {"issuer": "https://x.example"}).status_code == 403
    token = configured.token("ec", name="Ada Lovelace")
    for htmx in (False, True):
        answer = support.post("/idp/test", {"token": token}, htmx=htmx)
        assert answer.status_code == 200
        assert "Accepted: the end user is" in text(answer) and "user_2N4Z" in text(answer)
    # still a post: without the CSRF token it is refused
    assert support.post("/idp/test", {"token": token}, csrf=False).status_code == 400


def test_the_form_needs_csrf(admin):
    assert admin.post("/idp", {"issuer": ISSUER}, csrf=False).status_code == 400


@pytest.mark.parametrize("htmx", [True, False])
def test_test_a_token_says_what_tally_concludes(admin, configured, htmx, caplog):
    caplog.set_level(logging.DEBUG)
    token = configured.token("ec", name="Ada Lovelace", azp="https://app.example.com")
    page = text(admin.post("/idp/test", {"token": token}, htmx=htmx))
    assert "Accepted" in page and "user_2N4Z" in page and "Ada Lovelace" in page
    expired = configured.token(exp=int(time.time()) - 300)
    page = text(admin.post("/idp/test", {"token": expired}, htmx=htmx))
    assert "Refused" in page and "token_expired" in page
    wrong = text(admin.post("/idp/test", {"token": token, "origin": "https://other.example"}))
    assert "token_wrong_azp" in wrong
    for pasted in (token, expired):
        assert pasted not in page and pasted not in wrong  # never echoed back
        assert pasted not in caplog.text  # never logged


def test_the_key_page_sets_and_shows_user_token_and_origins(admin, db, client):
    response = admin.post(
        "/keys",
        {
            "name": "spa",
            "user": "",
            "user_token": "on",
            "origins": "https://App.example.com, http://localhost:3000",
        },
    )
    assert response.status_code == 201, text(response)
    assert SECRET.search(text(response))
    key = db.scalars(select(ApiKey)).one()
    assert key.user_token and key.origins == ["https://app.example.com", "http://localhost:3000"]
    page = text(admin.get("/keys"))
    assert "verified token" in page and "https://app.example.com" in page
    bad = admin.post("/keys", {"name": "x", "user": "", "origins": "https://a.example/path"})
    assert bad.status_code == 422 and "scheme://host" in text(bad)


def test_identities_show_which_users_were_verified(admin, tally, idp, user_key):
    from tests.helpers.identity_provider import call

    assert call(tally, idp.token(sub="user_real"), user_key).status_code == 200
    assert call(tally, None, user="user_claimed").status_code == 200
    page = text(admin.get("/identities"))
    row = page.split("user_real", 1)[1].split("</tr>", 1)[0]
    assert "verified" in row
    row = page.split("user_claimed", 1)[1].split("</tr>", 1)[0]
    assert "verified" not in row
