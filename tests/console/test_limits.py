"""Console /limits: admins set tiers, overrides and key policies, change the tier key and
reset a user; support sees and cannot change; every change is audited; HTMX gets the
panel alone; the identity page shows quota left and spend against budget."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from tally.models import AuditEntry, EndUser
from tests.helpers.api import chat
from tests.helpers.console import text
from tests.helpers.limits import set_limits


def test_the_page_shows_the_shipped_default_and_login_throttling(admin):
    page = text(admin.get("/limits"))
    assert '<tr data-scope="tier:default">' in page
    assert ">1000</td>" in page
    assert "5 per minute; 20 per hour" in page
    assert "Failed logins per browser signed in before" in page
    assert "tally+memory://" in page


@pytest.mark.parametrize("htmx", [True, False])
def test_admin_sets_a_tier_and_it_is_audited(admin, db, htmx):
    form = {"scope": "tier:pro", "messages": "5000", "daily_budget": "2.5"}
    response = admin.post("/limits/policies", form, htmx=htmx)
    if htmx:
        assert response.status_code == 200
        assert text(response).lstrip().startswith('<div id="limits-panel"')
        assert "HX-Request" in response.headers["Vary"]
    else:
        assert response.status_code == 303
    page = text(admin.get("/limits"))
    assert '<tr data-scope="tier:pro">' in page and "$2.50" in page
    entry = db.scalars(select(AuditEntry).where(AuditEntry.action == "limits.set")).one()
    assert entry.actor == admin.email and entry.target == "tier:pro"
    assert entry.after["messages"] == 5000 and entry.after["rpm"] is None
    assert "limits.set" in page  # the page's own audit list


@pytest.mark.parametrize(
    ("form", "message"),
    [
        ({"scope": "tier:pro", "messages": "many"}, "messages must be a whole number"),
        ({"scope": "group:x", "messages": "1"}, "unknown scope"),
        ({"scope": "tier:pro"}, "set at least one field"),
        ({"scope": "key:ghost", "rpm": "3"}, "no API key named"),
    ],
)
def test_a_bad_policy_is_a_422_message_with_the_form_kept(admin, form, message):
    response = admin.post("/limits/policies", form, htmx=True)
    assert response.status_code == 422
    assert message in text(response)
    assert f'value="{form["scope"]}"' in text(response)


def test_override_tier_key_and_unset(admin, db):
    assert admin.post("/limits/policies", {"scope": "user:u-7", "rpm": "3"}).status_code == 303
    page = text(admin.get("/limits"))
    assert '<tr data-scope="user:u-7">' in page
    assert admin.post("/limits/tier-key", {"tier_key": "tier"}).status_code == 303
    assert 'name="tier_key" value="tier"' in text(admin.get("/limits"))
    assert admin.post("/limits/policies/unset", {"scope": "user:u-7"}).status_code == 303
    assert 'data-scope="user:u-7"' not in text(admin.get("/limits"))
    actions = db.scalars(select(AuditEntry.action).order_by(AuditEntry.id)).all()
    assert actions[-3:] == ["limits.set", "limits.tier_key", "limits.unset"]


def test_support_sees_but_cannot_change(make_console):
    support = make_console("support")
    page = text(support.get("/limits"))
    assert '<tr data-scope="tier:default">' in page
    assert "Set a policy" not in page
    for url, form in [
        ("/limits/policies", {"scope": "tier:pro", "messages": "1"}),
        ("/limits/policies/unset", {"scope": "tier:pro"}),
        ("/limits/tier-key", {"tier_key": "x"}),
        ("/limits/reset", {"scope": "user:u-1"}),
    ]:
        assert support.post(url, form, htmx=True).status_code == 403


def test_changes_need_the_csrf_token(admin):
    response = admin.post("/limits/policies", {"scope": "tier:pro", "messages": "1"}, csrf=False)
    assert response.status_code == 400


def test_logged_out_redirects_to_login(make_console):
    response = make_console(None).get("/limits")
    assert response.status_code == 302 and "/login" in response.headers["Location"]


def test_after_a_restart_the_page_shows_use_rebuilt_from_the_log(tally_admin, tally):
    """Counters a restart lost are rebuilt for the page, before the user's next request."""
    from tally.limits.storage.registry import LocalStorage

    set_limits(tally.flask_app, "tier:default", "messages=5")
    for _ in range(4):
        assert chat(tally, user="back-later").status_code == 200
    runtime = tally.flask_app.extensions["tally"].limits
    runtime.storage = LocalStorage(clock=runtime.clock)  # as after a restart: nothing held
    runtime.ready.clear()
    page = text(tally_admin.get("/limits"))
    row = page[page.index('data-user="back-later"') :]
    assert "messages 4 / 5" in row[: row.index("</tr>")] and "80 %" in page
    response = chat(tally, user="back-later")  # the rebuilt counter, not a second one
    assert response.headers["X-RateLimit-Remaining"] == "0"
    assert chat(tally, user="back-later").status_code == 429


def test_who_is_limited_and_near_and_a_reset_lifts_it(tally_admin, tally, db):
    admin = tally_admin
    set_limits(tally.flask_app, "tier:default", "messages=5")
    for _ in range(5):
        assert chat(tally, user="heavy").status_code == 200
    for _ in range(4):
        chat(tally, user="near")
    chat(tally, user="light")
    assert chat(tally, user="heavy").status_code == 429
    page = text(admin.get("/limits"))
    order = [u for u in ("heavy", "near", "light") if f'data-user="{u}"' in page]
    assert order == ["heavy", "near", "light"]
    assert page.index('data-user="heavy"') < page.index('data-user="near"')
    assert "limited" in page and "80 %" in page
    assert admin.post("/limits/reset", {"scope": "user:heavy"}, htmx=True).status_code == 200
    assert chat(tally, user="heavy").status_code == 200
    entry = db.scalars(select(AuditEntry).where(AuditEntry.action == "limits.reset")).one()
    assert entry.target == "user:heavy" and entry.actor == admin.email


def test_identity_page_shows_quota_left_and_spend(tally_admin, tally, db):
    admin = tally_admin
    set_limits(tally.flask_app, "tier:default", "messages=10", "daily_budget=1")
    for _ in range(3):
        chat(tally, user="u-1")
    user_id = db.scalars(select(EndUser.id).where(EndUser.external_id == "u-1")).one()
    page = text(admin.get(f"/identities/{user_id}"))
    assert 'id="user-limits"' in page
    assert '<tr data-field="messages"><td data-label="Limit">messages</td>' in page
    assert (
        '<td class="num" data-label="Used">3</td><td class="num" data-label="Left">7</td>' in page
    )
    # the fake upstream's cost: $0.00042 a call; budgets as money, like on /limits
    budget = page.split('<tr data-field="daily_budget">', 1)[1].split("</tr>", 1)[0]
    assert '<td class="num" data-label="Used">$0.0013</td>' in budget
    assert '<td class="num" data-label="Left">$0.9987</td>' in budget
    assert '<td class="num" data-label="Of">$1.00</td>' in budget
