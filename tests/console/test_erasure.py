"""Erasing an end user from the console: admins only, the internal id typed as
confirmation, CSRF-checked; a wrong confirmation is a 422 form message and erases
nothing; success goes back to the directory with a flash."""

from __future__ import annotations

import time

import pytest
from sqlalchemy import select

from tally.limits.checks import marker_of, subject_keys
from tally.limits.policy_store import read_policies
from tally.models import ApiKey, AuditEntry, EndUser
from tests.helpers.console import text
from tests.helpers.erasure import (
    EMAIL,
    IDENTIFIERS,
    USER,
    assert_totals_whole,
    build_person,
    find_anywhere,
    personal_values,
)

FORM = 'name="confirm"'


@pytest.fixture
def person(app, db):
    """The user to erase (tests.helpers.erasure)."""
    return build_person(db)


def still_there(db) -> bool:
    db.expire_all()
    user = db.scalars(select(EndUser).where(EndUser.external_id == USER)).first()
    return user is not None and user.email == EMAIL


def test_admin_sees_the_form_and_support_does_not(admin, support, person):
    page = text(admin.get(f"/identities/{person.user_id}"))
    assert "Erase this user" in page and FORM in page
    assert f"Type the internal id <code>{USER}</code> to confirm" in page
    page = text(support.get(f"/identities/{person.user_id}"))
    assert "Erase this user" not in page and FORM not in page


def test_support_cannot_erase(support, db, person):
    response = support.post(f"/identities/{person.user_id}/erase", {"confirm": USER})
    assert response.status_code == 403
    assert still_there(db)


@pytest.mark.parametrize("htmx", [True, False])
@pytest.mark.parametrize("typed", ["", "zelda", USER + "x", USER.upper()])
def test_a_wrong_confirmation_is_a_422_and_erases_nothing(admin, db, person, htmx, typed):
    response = admin.post(f"/identities/{person.user_id}/erase", {"confirm": typed}, htmx=htmx)
    assert response.status_code == 422
    page = text(response)
    assert "The confirmation does not match: type the internal id exactly to erase." in page
    if htmx:
        assert page.lstrip().startswith('<section class="card" id="erase-user">')
    else:
        assert "<h1>End user" in page
    assert 'aria-invalid="true"' in page
    assert still_there(db)
    assert not db.scalars(select(AuditEntry).where(AuditEntry.action == "identity.erase")).all()


def test_without_csrf_nothing_is_erased(admin, db, person):
    response = admin.post(f"/identities/{person.user_id}/erase", {"confirm": USER}, csrf=False)
    assert response.status_code == 400
    assert still_there(db)


def test_an_unknown_user_is_404(admin, person):
    assert admin.post("/identities/9999/erase", {"confirm": "x"}).status_code == 404


def test_erase_redirects_to_the_directory_and_leaves_nothing(app, admin, db, person):
    admin.get(f"/identities/{person.user_id}")  # a profile view, audited with the id
    response = admin.post(f"/identities/{person.user_id}/erase", {"confirm": f" {USER} "})
    assert response.status_code == 303
    assert response.headers["Location"].endswith("/identities")
    page = text(admin.get("/identities"))
    assert "Erased the end user: 3 identifiers deleted, 7 request rows anonymised" in page
    bound = db.scalars(select(ApiKey).where(ApiKey.revoked_at.is_not(None))).one()
    assert f"1 bound keys revoked and renamed erased-key-{bound.id}; the totals stay." in page
    assert not still_there(db)
    assert find_anywhere(app.extensions["tally"].engine, personal_values()) == []
    assert_totals_whole(db, person.totals)
    entry = db.scalars(select(AuditEntry).where(AuditEntry.action == "identity.erase")).one()
    assert entry.actor == admin.email and USER not in entry.target


def test_erase_over_htmx_answers_hx_redirect(admin, db, person):
    response = admin.post(f"/identities/{person.user_id}/erase", {"confirm": USER}, htmx=True)
    assert response.status_code == 200
    assert response.headers["HX-Redirect"] == "/identities"
    assert not still_there(db)


def test_the_trace_no_longer_finds_them(admin, person):
    admin.post(f"/identities/{person.user_id}/erase", {"confirm": USER})
    page = text(admin.get("/identities", query_string={"q": IDENTIFIERS[0]}))
    assert "No end user matches." in page and "exact identifier" not in page


def test_the_placeholder_page_shows_an_erased_user(admin, person):
    admin.post(f"/identities/{person.user_id}/erase", {"confirm": USER})
    page = text(admin.get(f"/identities/{person.user_id}"))
    assert "<h1>Erased user" in page and FORM not in page
    assert "erased user</span>" in text(admin.get("/identities"))


def test_their_limit_counters_are_cleared(app, admin, person):
    storage = app.extensions["tally"].limits.storage
    keys = subject_keys(f"user:{USER}", time.time())
    counter = next(k for k in keys if k.startswith("tally/tok/d"))
    storage.incr(counter, 3600, 500)
    storage.incr(counter + "/seeded", 3600)
    with app.extensions["tally"].sessions() as session:  # the markers of today's policies
        marker = marker_of(counter, read_policies(session).stamp)
    storage.incr(marker + "/ready", 3600)
    admin.post(f"/identities/{person.user_id}/erase", {"confirm": USER})
    assert storage.get(counter) == 0 and storage.get(counter + "/seeded") == 0
    assert storage.get(marker + "/ready") == 0  # its name holds their id
