"""Refused calls on the console (PRODUCT.md, Limits: "Refusals are visible"): the
dashboard's and the usage page's figures count them apart from requests and errors, and
a user's page lists each with its status and code, no tokens and no cost."""

from __future__ import annotations

import re

import pytest

from tests.helpers.api import chat
from tests.helpers.console import text
from tests.helpers.limits import set_limits
from tests.helpers.rows import end_users


@pytest.fixture
def refusals(tally, upstream):
    """Three calls served to "ada" (one an upstream error), then three refused: two by
    her message quota, one bad body."""
    assert chat(tally, user="ada").status_code == 200
    assert chat(tally, user="ada").status_code == 200
    upstream.reply(status=500, json={"error": {"message": "upstream broke"}})
    assert chat(tally, user="ada").status_code == 500
    set_limits(tally.flask_app, "tier:default", "messages=3")
    assert [chat(tally, user="ada").status_code for _ in range(2)] == [429, 429]
    assert chat(tally, {"model": "m", "messages": [], "user": "ada"}).status_code == 400
    return tally


def stats(html: str) -> dict[str, str]:
    """The first stat cards' label -> value."""
    found = re.findall(
        r'<div class="stat-label">([^<]+)</div>\s*<div class="stat-value">([^<]+)</div>', html
    )
    return dict(reversed(found))  # the first card of each label wins


def test_the_dashboard_counts_refusals_apart(tally_admin, refusals):
    page = text(tally_admin.get("/"))
    today, month = (stats(part) for part in page.split("Last 30 days", 1))
    for figures in (today, month):  # the upstream's 500 is an error, no refusal is
        assert (figures["Requests"], figures["Errors"], figures["Refused"]) == ("3", "1", "3")
    top = page[page.index(">ada</code>") :]
    cells = re.findall(r'<td class="num[^"]*">([^<]*)</td>', top[: top.index("</tr>")])
    assert (cells[0], cells[3], cells[4]) == ("3", "1", "3")  # requests, errors, refused


def test_the_usage_page_counts_refusals_apart(tally_admin, refusals):
    figures = stats(text(tally_admin.get("/usage")))
    assert (figures["Requests"], figures["Errors"], figures["Refused"]) == ("3", "1", "3")


def test_a_users_page_lists_refused_calls_with_status_and_code(tally_admin, refusals):
    [ada] = [u for u in end_users(refusals.flask_app) if u.external_id == "ada"]
    page = text(tally_admin.get(f"/identities/{ada.id}"))
    assert stats(page)["Refused"] == "3" and stats(page)["Requests"] == "3"
    recent = page[page.index("Recent requests") :]
    rows = re.findall(r"<tr>(.*?)</tr>", recent, re.S)[1:]  # after the head
    assert len(rows) == 6
    refused = [row for row in rows if ">refused</span>" in row]
    assert len(refused) == 3
    codes = sorted(re.search(r'class="status-bad"[^>]*>([^<]+)<', r).group(1) for r in refused)
    assert codes == ["400 invalid_request_error", *["429 rate_limit_exceeded"] * 2]
    for row in refused:
        cells = re.findall(r'<td class="num">([^<]*)</td>', row)
        assert cells[:2] == ["–", "–"]  # no tokens, no cost
        assert '<span class="muted">–</span>' in row  # no identifier sent
    served = [row for row in rows if ">refused</span>" not in row]
    assert len(served) == 3 and all("<code>tally_" in row for row in served)
