"""/identities without a query: the users table (requests and cost of the last 30 days,
last seen, tier, limit state), sorted by each column, paged; the demo badge; and a
user's page whose date range holds for all its figures."""

from __future__ import annotations

import re
from datetime import timedelta
from html import unescape

import pytest

from tally.db import utcnow
from tally.demo.seed import seed_demo_traffic
from tally.end_users.directory import upsert_end_user
from tally.reports import users as users_report
from tests.helpers.console import text
from tests.helpers.rows import end_users, record_traffic


def rows(body: str) -> list[dict[str, str]]:
    """The users table's rows: column label -> the cell's text."""
    section = body.split('class="stack-sm users-table"', 1)[1].split("</table>", 1)[0]
    found = []
    for row in re.findall(r"<tr data-user[^>]*>(.*?)</tr>", section, re.S):
        cells = re.findall(r'<td[^>]*data-label="([^"]+)"[^>]*>(.*?)</td>', row, re.S)
        found.append(
            {
                label: " ".join(unescape(re.sub(r"<[^>]+>", " ", cell)).split())
                for label, cell in cells
            }
        )
    return found


def order(body: str) -> list[str]:
    """The internal ids of the table's rows, in order."""
    return re.findall(r'<tr data-user="([^"]+)"', body)


@pytest.fixture
def people(app, admin):
    """ada (tier pro, 3 calls an hour ago, limited by her own messages=3), eve (17 calls
    a minute before those, of her messages=20: 85 %), bob (1 call 5 days ago, $2), cy (2 calls 40
    days ago: none in the 30 days), dee (seen now, no call)."""
    now = utcnow().replace(microsecond=0)
    hour = now - timedelta(hours=1)
    with app.extensions["tally"].sessions() as session:
        upsert_end_user(
            session,
            "ada",
            {"display_name": "Ada L", "email": "ada@example.com", "metadata": [{"plan": "pro"}]},
            now=hour - timedelta(days=60),
        )
        calls = [
            {"when": hour - timedelta(seconds=n), "user": "ada", "cost": 0.1} for n in range(3)
        ]
        calls += [
            {"when": hour - timedelta(minutes=1, seconds=n), "user": "eve", "cost": 0.01}
            for n in range(17)
        ]
        calls.append({"when": now - timedelta(days=5), "user": "bob", "cost": 2.0})
        calls += [{"when": now - timedelta(days=40), "user": "cy", "cost": 5.0}] * 2
        calls[-1] = calls[-1] | {"request_id": "cy-2"}
        record_traffic(session, calls)
        upsert_end_user(session, "dee", now=now)
        session.commit()
    for form in (
        {"scope": "tier:pro", "messages": "500"},
        {"scope": "user:ada", "messages": "3"},
        {"scope": "user:eve", "messages": "20"},
    ):
        assert admin.post("/limits/policies", form).status_code == 303
    return now


def test_the_table_without_a_query(support, people):
    response = support.get("/identities")
    assert response.status_code == 200
    body = text(response)
    assert "Matched identifier" not in body
    for label in ("Requests (30 d)", "Cost (30 d)", "Last seen", "Tier", "Limit state"):
        assert f">{label}" in body
    table = {row["User"].split()[0]: row for row in rows(body)}
    assert table["ada"] == {
        "User": "ada calls → Ada L · ada@example.com",  # and a link to her calls
        "Requests": "3",
        "Cost": "$0.30",
        "Last seen": (people - timedelta(hours=1)).strftime("%Y-%m-%d %H:%M UTC"),
        "Tier": "pro",
        "Limit state": "limited: messages",
    }
    assert table["eve"]["Limit state"] == "near: 85 % of messages"
    assert table["eve"]["Requests"] == "17" and table["eve"]["Cost"] == "$0.17"
    assert table["bob"]["Requests"] == "1" and table["bob"]["Cost"] == "$2.00"
    assert table["bob"]["Limit state"] == "ok" and table["bob"]["Tier"] == "default"
    assert table["cy"]["Requests"] == "0" and table["cy"]["Cost"] == "$0.00"
    assert table["dee"]["Requests"] == "0"
    assert 'href="/identities/' in body


@pytest.mark.parametrize(
    "sort,expected",
    [
        ("", ["dee", "ada", "eve", "bob", "cy"]),  # last seen, most recent first
        ("last_seen", ["dee", "ada", "eve", "bob", "cy"]),
        ("requests", ["eve", "ada", "bob", "dee", "cy"]),  # then no traffic, by last seen
        ("cost", ["bob", "ada", "eve", "dee", "cy"]),
        ("user", ["ada", "bob", "cy", "dee", "eve"]),
        ("tier", ["dee", "eve", "bob", "cy", "ada"]),  # default, then pro
        ("limit", ["ada", "eve", "dee", "bob", "cy"]),  # limited, near, then by last seen
        ("nonsense", ["dee", "ada", "eve", "bob", "cy"]),
    ],
)
def test_each_sort(admin, people, sort, expected):
    body = text(admin.get(f"/identities?sort={sort}", htmx=True))
    assert body.lstrip().startswith('<section id="identity-results"')
    assert order(body) == expected


def test_column_headers_sort_and_say_which(admin, people):
    body = text(admin.get("/identities?sort=cost"))
    head = body.split("<thead>", 1)[1].split("</thead>", 1)[0]
    links = re.findall(r'<a class="sort-link[^"]*" href="([^"]+)"', head)
    assert links == [f"/identities?sort={s}" for s in users_report.SORTS]
    assert (
        'aria-sort="descending"><a class="sort-link sort-current" href="/identities?sort=cost"'
        in head
    )
    assert "sorted by cost in the last 30 days, highest first" in body


def test_the_table_is_paged(admin, app, people, monkeypatch):
    monkeypatch.setattr(users_report, "PER_PAGE", 2)
    first = text(admin.get("/identities?sort=cost"))
    assert order(first) == ["bob", "ada"] and "Page 1 of 3" in first
    assert 'href="/identities?page=2&amp;sort=cost"' in first
    assert order(text(admin.get("/identities?sort=cost&page=2"))) == ["eve", "dee"]
    assert order(text(admin.get("/identities?sort=cost&page=3"))) == ["cy"]
    assert order(text(admin.get("/identities?sort=requests&page=2"))) == ["bob", "dee"]
    assert order(text(admin.get("/identities?sort=limit&page=2"))) == ["dee", "bob"]
    assert order(text(admin.get("/identities?sort=user&page=99"))) == ["eve"]
    # by tier: default (dee, eve, bob, cy), then pro (ada)
    assert order(text(admin.get("/identities?sort=tier&page=2"))) == ["bob", "cy"]
    assert order(text(admin.get("/identities?sort=tier&page=3"))) == ["ada"]


def test_the_tier_sort_when_every_user_has_metadata_of_their_own(admin, people, monkeypatch):
    monkeypatch.setattr(users_report, "MAX_PROFILES", 0)  # placed in Python instead
    body = text(admin.get("/identities?sort=tier"))
    assert order(body) == ["dee", "eve", "bob", "cy", "ada"]


def test_browsing_the_table_is_not_audited_but_a_search_is(admin, people, db):
    from sqlalchemy import func, select

    from tally.models import AuditEntry

    def lookups():
        return db.scalar(select(func.count()).where(AuditEntry.action == "identity.lookup"))

    before = lookups()
    admin.get("/identities?sort=cost")
    assert lookups() == before
    admin.get("/identities?q=ad")
    assert lookups() == before + 1


def test_only_dev_seed_users_carry_the_demo_badge(admin, app, client, make_key):
    key = make_key()
    response = client.post(
        "/v1/chat/completions",
        headers={"Authorization": f"Bearer {key}"},
        json={
            "model": "tally/demo-mini",
            "user": "real-user",
            "messages": [{"role": "user", "content": "hi"}],
        },
    )
    assert response.status_code == 200  # answered by the built-in demo upstream
    with app.extensions["tally"].sessions() as session:
        seed_demo_traffic(session, b"k" * 32, requests=3, users=1)
        session.commit()
    assert {u.external_id: u.is_demo for u in end_users(app)} == {
        "real-user": False,
        "demo_user_00000": True,
    }
    body = text(admin.get("/identities?sort=user"))
    badges = {row["User"].split()[0]: "demo" in row["User"].split()[1:] for row in rows(body)}
    assert badges == {"demo_user_00000": True, "real-user": False}
    search = text(admin.get("/identities?q=real-user"))
    assert 'title="made by dev seed">demo<' not in search
    page = text(admin.get(f"/identities/{end_users(app)[0].id}"))
    assert 'muted-badge">demo<' not in page


def test_a_user_page_range_holds_for_every_figure(support, app, people):
    with app.extensions["tally"].sessions() as session:
        from sqlalchemy import select

        from tally.models import EndUser

        cy = session.scalar(select(EndUser.id).where(EndUser.external_id == "cy"))
    old = (people - timedelta(days=40)).date()
    default = text(support.get(f"/identities/{cy}"))
    usage = default.split('id="user-usage"', 1)[1].split("</section>", 1)[0]
    assert "No requests in this range." in usage  # cy's calls are 40 days old
    assert "the last 30" in usage
    page = text(support.get(f"/identities/{cy}?start={old}&end={old}"))
    usage = page.split('id="user-usage"', 1)[1].split("</section>", 1)[0]
    assert f"{old} → {old}" in usage
    assert re.search(r'stat-label">Requests</div>\s*<div class="stat-value">2<', usage)
    assert re.search(r'stat-label">Cost</div>\s*<div class="stat-value">\$10.00<', usage)
    assert 'name="start" value="' + old.isoformat() in page
    performance = page.split('id="user-performance"', 1)[1].split("</section>", 1)[0]
    assert f"{old} → {old}" in performance
    assert "Requests (all time)" in page


@pytest.mark.parametrize("chunk", [500, 2])
def test_capped_search_count(admin, app, monkeypatch, chunk):
    from tally.end_users import search
    from tally.end_users.directory import upsert_identifier

    monkeypatch.setattr(search, "COUNT_CAP", 3)
    monkeypatch.setattr(search, "WALK_CHUNK", chunk)  # 2: the walk reads several chunks
    with app.extensions["tally"].sessions() as session:
        for n in range(5):
            user = upsert_end_user(session, f"many-{n}", now=utcnow() - timedelta(minutes=n))
            upsert_identifier(session, f"tally_{n}{n}{n}", user, None)
            upsert_identifier(session, f"tally_{n}{n}{n}b", user, None)  # counted once
        upsert_end_user(session, "other", now=utcnow())  # the most recent: no match
        session.commit()
    body = text(admin.get("/identities?q=many-"))
    assert "3+ matches" in body
    assert re.findall(r">(many-\d)</code>", body) == [f"many-{n}" for n in range(5)]
    by_identifier = text(admin.get("/identities?q=tally_"))
    assert "3+ matches" in by_identifier and ">other</code>" not in by_identifier
    assert re.findall(r">(many-\d)</code>", by_identifier) == [f"many-{n}" for n in range(5)]
    exact = text(admin.get("/identities?q=many-1"))
    assert "1 match for" in exact
