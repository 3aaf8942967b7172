"""The identity directory: search by identifier (exact or prefix), internal id, e-mail and
name; pagination; the detail page; every lookup in the audit log."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select

from tally.db import utcnow
from tally.end_users.directory import upsert_end_user, upsert_identifier
from tally.models import AuditEntry
from tests.helpers.console import text
from tests.helpers.rows import record_traffic


@pytest.fixture
def people(app):
    """Two end users with profiles, identifiers from two revisions, and a request each."""
    now = utcnow()
    with app.extensions["tally"].sessions() as session:
        ada = upsert_end_user(
            session, "user-ada", {"display_name": "Ada Lovelace", "email": "ada@example.com"}
        )
        upsert_identifier(session, "tally_aaaa1111bbbb2222", ada, 1)
        upsert_identifier(session, "acme_user-ada", ada, 1)
        grace = upsert_end_user(
            session, "user-grace", {"display_name": "Grace Hopper", "email": "g@navy.example"}
        )
        upsert_identifier(session, "tally_cccc3333dddd4444", grace, 1)
        session.commit()
        calls = [
            {"when": now - timedelta(minutes=n), "user": user, "model": "openai/gpt-4o-mini"}
            for n, user in enumerate(("user-ada", "user-grace"))
        ]
        record_traffic(session, [call | {"tokens": 100, "cost": 0.25} for call in calls])
    return {"ada": ada, "grace": grace}


@pytest.mark.parametrize(
    "query,found",
    [
        ("tally_aaaa1111bbbb2222", ["user-ada"]),  # exact identifier
        ("tally_aaaa", ["user-ada"]),  # identifier prefix
        ("tally_", ["user-ada", "user-grace"]),
        ("user-grace", ["user-grace"]),  # internal id
        ("user-", ["user-ada", "user-grace"]),  # internal id prefix
        ("ADA@example", ["user-ada"]),  # e-mail, any case
        ("hopper", ["user-grace"]),  # display name, any case
        ("%", []),  # LIKE wildcards are text
        ("_", []),
        ("nobody", []),
    ],
)
def test_search(admin, people, query, found):
    response = admin.get("/identities", query_string={"q": query}, htmx=True)
    assert response.status_code == 200
    page = text(response)
    for external_id in ("user-ada", "user-grace"):
        assert (f">{external_id}</code>" in page) == (external_id in found), external_id


def test_exact_identifier_is_traced_to_the_user(support, people):
    page = text(support.get("/identities?q=tally_cccc3333dddd4444"))
    assert "exact identifier" in page
    hit = page.split('class="trace-hit"', 1)[1].split("</div>", 1)[0]
    assert "user-grace" in hit and f"/identities/{people['grace']}" in hit


def test_empty_search_lists_the_users_table(admin, people):
    page = text(admin.get("/identities"))
    assert "End users" in page and "Matched identifier" not in page
    assert "user-ada" in page and "user-grace" in page


def test_pagination(admin, app):
    with app.extensions["tally"].sessions() as session:
        for n in range(45):
            upsert_end_user(session, f"bulk-{n:02d}")
        session.commit()
    first = text(admin.get("/identities?q=bulk-"))
    assert "45 matches" in first and "Page 1 of 3" in first
    third = admin.get("/identities?q=bulk-&page=3", htmx=True)
    assert "Page 3 of 3" in text(third)
    assert text(third).count('class="internal-id"') == 5
    assert "Page 3 of 3" in text(admin.get("/identities?q=bulk-&page=99"))


def test_detail_shows_profile_identifiers_usage_and_requests(support, people):
    response = support.get(f"/identities/{people['ada']}")
    assert response.status_code == 200
    page = text(response)
    assert "user-ada" in page and "Ada Lovelace" in page and "ada@example.com" in page
    assert "tally_aaaa1111bbbb2222" in page and "acme_user-ada" in page
    assert "openai/gpt-4o-mini" in page and "$0.25" in page


def test_every_lookup_by_support_is_audited(support, people, db):
    support.get("/identities?q=tally_aaaa1111bbbb2222")
    support.get("/identities?q=tally_aaaa1111bbbb2222&page=1", htmx=True)
    support.get(f"/identities/{people['grace']}")
    entries = db.scalars(
        select(AuditEntry).where(AuditEntry.action == "identity.lookup").order_by(AuditEntry.id)
    ).all()
    assert [(e.actor, e.target) for e in entries] == [
        (support.email, "tally_aaaa1111bbbb2222"),
        (support.email, "tally_aaaa1111bbbb2222"),
        (support.email, "user-grace"),
    ]
    assert entries[0].after == {"query": "tally_aaaa1111bbbb2222", "results": 1, "page": 1}
    # ... and shows in the audit log under "identity lookups".
    log = text(support.get("/audit?kind=identity"))
    assert "identity.lookup" in log and "user-grace" in log


def test_browsing_without_a_query_is_not_a_lookup(support, people, db):
    support.get("/identities")
    lookups = select(AuditEntry).where(AuditEntry.action == "identity.lookup")
    assert db.scalars(lookups).first() is None
