"""Identifier collisions on the console (issue 18): the identity search names every user
behind a shared identifier with a "shared by N users (hash collision)" note, each user's
page marks the shared identifier; the config preview warns when hash_length makes a
collision likely at the current number of end users (birthday bound, from 1 %)."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import insert

from tally.db import utcnow
from tally.models import EndUser
from tests.helpers.api import chat
from tests.helpers.collisions import FIRST, SECOND, SHARED, make_them_collide, sha256_identifier
from tests.helpers.console import text
from tests.helpers.rows import end_users

NOTE = "shared by 2 users (hash collision)"


@pytest.fixture
def collided(tally):
    """FIRST and SECOND have called through the API under the colliding config (and a
    third user with an identifier of their own); their user ids."""
    make_them_collide(tally.flask_app)
    for user in (FIRST, SECOND, "loner"):
        assert chat(tally, user=user).status_code == 200
    return {user.external_id: user.id for user in end_users(tally.flask_app)}


def _trace_hit(page: str) -> str:
    return page.split('class="trace-hit"', 1)[1].split("</div>", 1)[0]


@pytest.mark.parametrize("htmx", [True, False])
def test_search_for_a_shared_identifier_names_every_user(support, collided, htmx):
    page = text(support.get("/identities", query_string={"q": SHARED}, htmx=htmx))
    hit = _trace_hit(page)
    assert NOTE in hit and 'data-collision="2"' in hit
    for user in (FIRST, SECOND):
        assert f'href="/identities/{collided[user]}"' in hit
        assert f">{user}</code>" in hit
    assert "loner" not in hit
    assert "2 matches for" in page  # the result rows: both users, the identifier each


def test_an_identifier_of_one_user_has_no_note(support, collided):
    page = text(support.get("/identities", query_string={"q": sha256_identifier("loner")}))
    hit = _trace_hit(page)
    assert ">loner</code>" in hit
    assert "shared by" not in page and "data-collision" not in page


@pytest.mark.parametrize("user", [FIRST, SECOND])
def test_each_users_page_marks_the_shared_identifier(support, collided, user):
    page = text(support.get(f"/identities/{collided[user]}"))
    row = page.split(f"<code>{SHARED}</code>", 1)[1].split("</td>", 1)[0]
    assert NOTE in row
    assert f'href="/identities?q={SHARED}"' in row


def test_a_page_without_shared_identifiers_has_no_note(support, collided):
    page = text(support.get(f"/identities/{collided['loner']}"))
    assert sha256_identifier("loner") in page
    assert "shared by" not in page


# --- the config preview's collision warning ---------------------------------------------

FORM = {
    "enabled": "on",
    "prefix": "tally",
    "hash_mode": "hmac-sha256",
    "hash_length": "16",
    "dialect": "openrouter",
    "cache_key": "off",
    "forward_profile": "off",
    "require_identity": "off",
}


def seed_users(app, count: int, name: str = "seed") -> None:
    """``count`` end users in one executemany: the number a collision risk counts."""
    now = utcnow()
    rows = [
        {"external_id": f"{name}-{n}", "first_seen": now, "last_seen": now, "is_demo": True}
        for n in range(count)
    ]
    with app.extensions["tally"].sessions() as session:
        session.execute(insert(EndUser), rows)
        session.commit()


def _warning(page: str) -> str | None:
    found = re.search(r'<p class="message-warning" data-preview="collision">([^<]*)</p>', page)
    return found.group(1) if found else None


@pytest.fixture
def many_users(app):
    """12,000 end users: at 8 hex characters a 1.7 % chance that two share one."""
    seed_users(app, 12_000)


@pytest.mark.parametrize("htmx", [True, False])
def test_the_preview_warns_at_a_short_length_with_many_users(admin, many_users, htmx):
    page = text(admin.get("/config/preview", query_string={**FORM, "hash_length": "8"}, htmx=htmx))
    assert _warning(page) == (
        "Collision risk: with 12,000 end users and a hash_length of 8, the chance that two "
        "of them share an upstream identifier is 1.7 % (the router would see them as one "
        "user; trace lists both), and it grows as users are added. A hash_length of 10 "
        "brings it under 0.1 %."
    )


@pytest.mark.parametrize(
    "fields",
    [
        {"hash_length": "16"},
        {"hash_length": "10"},  # 0.0066 %
        {"hash_length": "8", "hash_mode": "none"},  # identifiers are the ids: distinct
        {"hash_length": "8", "enabled": "off"},  # nothing is sent
    ],
)
def test_no_warning_where_a_collision_is_unlikely_or_impossible(admin, many_users, fields):
    page = text(admin.get("/config/preview", query_string={**FORM, **fields}, htmx=True))
    assert 'data-preview="edited"' in page  # the preview itself is there
    assert _warning(page) is None


def test_few_users_need_no_warning_even_at_8(admin, app):
    seed_users(app, 9_000)  # 0.94 %: under the 1 % a warning starts at
    page = text(admin.get("/config/preview", query_string={**FORM, "hash_length": "8"}))
    assert _warning(page) is None
    seed_users(app, 300, "more")  # 9,300 users: 1.0 %
    page = text(admin.get("/config/preview", query_string={**FORM, "hash_length": "8"}))
    assert "with 9,300 end users and a hash_length of 8, the chance" in _warning(page)
    assert "share an upstream identifier is 1.0 % (" in _warning(page)


def test_the_saved_config_page_keeps_warning(admin, many_users):
    admin.post("/config", {**FORM, "hash_length": "8"})
    page = text(admin.get("/config"))
    assert (
        "a hash_length of 8, the chance that two of them share an upstream identifier is 1.7 %"
        in _warning(page)
    )
