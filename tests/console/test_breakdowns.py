"""The usage page's breakdown (any grouping, the chargeback per API key and its users),
its paging, and its streamed CSV and JSON exports."""

from __future__ import annotations

import json
import re
from html import unescape

import pytest

from blueprints.console import usage as console_usage
from tests.helpers.breakdowns import END, EXPECTED, START
from tests.helpers.console import text

RANGE = f"start={START.isoformat()}&end={END.isoformat()}"


def table(body: str) -> list[list[str]]:
    """The breakdown table's body rows, each a list of cell texts."""
    section = body.split('id="usage-breakdown"', 1)[1].split("</section>", 1)[0]
    rows = re.findall(r"<tr>(.*?)</tr>", section.split("<tbody>", 1)[1], re.S)
    return [
        [
            unescape(re.sub(r"<[^>]+>", "", cell)).strip()
            for cell in re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)
        ]
        for row in rows
    ]


def test_the_breakdown_by_user_as_a_fragment(admin, workload):
    response = admin.get(f"/usage?{RANGE}&group_by=user", htmx=True)
    assert response.status_code == 200
    body = text(response)
    assert body.lstrip().startswith('<div id="usage-report"')
    assert "<th>Internal id</th><th>Display name</th>" in body  # words, not column names
    assert table(body) == [
        ["(anonymous)", "–", "1", "0", "0", "0", "$0.00", ""],
        ["ada", "Ada L", "3", "301", "62", "60", "$0.35", "calls →"],
        ["bob", "–", "2", "60", "15", "0", "$0.06", "calls →"],
        ["cy", "–", "1", "30", "0", "0", "$0.003", "calls →"],
    ]


@pytest.mark.parametrize(
    "query",
    ["group_by=metadata&metadata_key=plan", "group_by=metadata:plan"],
)
def test_the_breakdown_by_a_metadata_key(admin, workload, query):
    body = text(admin.get(f"/usage?{RANGE}&{query}"))
    assert "<th>plan</th>" in body and 'name="metadata_key" value="plan"' in body
    assert [row[:2] for row in table(body)] == [["–", "2"], ["free", "2"], ["pro", "3"]]


def test_the_breakdown_by_tag_and_the_default_by_model(admin, workload):
    by_tag = table(text(admin.get(f"/usage?{RANGE}&group_by=tag")))
    assert [row[0] for row in by_tag] == ["–", "beta", "plan-free", "plan-pro"]
    by_model = table(text(admin.get(f"/usage?{RANGE}")))
    assert by_model[1] == ["m-a", "3", "310", "70", "60", "$0.36"]


def test_chargeback_per_key_and_a_tenants_users(admin, workload):
    body = text(admin.get(f"/usage?{RANGE}&group_by=key", htmx=True))
    assert "Chargeback per API key" in body
    assert table(body) == [
        ["–", "1", "0", "0", "0", "$0.00", ""],
        ["acme", "4", "340", "70", "60", "$0.363", "its users →"],
        ["globex", "2", "51", "7", "0", "$0.05", "its users →"],
    ]
    link = (
        f"/usage?start={START.isoformat()}&amp;end={END.isoformat()}&amp;metric=requests"
        "&amp;group_by=user&amp;key=acme"
    )
    assert f'href="{link}"' in body
    users = text(admin.get(unescape(link), htmx=True))
    assert "of API key <code>acme</code>" in users
    assert table(users) == [
        ["ada", "Ada L", "2", "300", "60", "60", "$0.35", "calls →"],
        ["bob", "–", "1", "10", "10", "0", "$0.01", "calls →"],
        ["cy", "–", "1", "30", "0", "0", "$0.003", "calls →"],
    ]
    assert (
        'href="/usage.csv?start=2026-02-27&amp;end=2026-04-02&amp;group_by=user&amp;key=acme"'
        in users
    )


def test_paging_the_breakdown(admin, workload, monkeypatch):
    monkeypatch.setattr(console_usage, "BREAKDOWN_ROWS", 2)
    first = text(admin.get(f"/usage?{RANGE}&group_by=user"))
    assert [row[0] for row in table(first)] == ["(anonymous)", "ada"]
    link = re.search(r'<nav class="pager"[^>]*><a href="([^"]+)"', first).group(1)
    assert "after=ada" in link
    second = text(admin.get(unescape(link)))
    assert [row[0] for row in table(second)] == ["bob", "cy"]
    assert '<nav class="pager"' not in second


@pytest.mark.parametrize("group_by", sorted(EXPECTED))
def test_json_export_is_exact_and_streamed(admin, workload, group_by):
    response = admin.get(f"/usage.json?{RANGE}&group_by={group_by}")
    assert response.status_code == 200
    assert response.is_streamed and response.mimetype == "application/json"
    name = group_by.replace(":", "-")
    assert response.headers["Content-Disposition"] == (
        f'attachment; filename="tally-usage-by-{name}-2026-02-27-2026-04-02.json"'
    )
    assert json.loads(text(response)) == {"rows": EXPECTED[group_by]}


def test_csv_export_is_exact(admin, workload):
    response = admin.get(f"/usage.csv?{RANGE}&group_by=tag")
    assert response.headers["Content-Disposition"] == (
        'attachment; filename="tally-usage-by-tag-2026-02-27-2026-04-02.csv"'
    )
    assert text(response) == (
        "tag,requests,prompt_tokens,completion_tokens,cached_tokens,cost_usd\n"
        ",2,30,0,0,0.003000\n"
        "beta,3,301,62,60,0.350000\n"
        "plan-free,2,60,15,0,0.060000\n"
        "plan-pro,3,301,62,60,0.350000\n"
    )


def test_the_page_links_the_exports_of_its_grouping(admin, workload):
    body = text(admin.get(f"/usage?{RANGE}&group_by=metadata:plan"))
    query = "start=2026-02-27&amp;end=2026-04-02&amp;group_by=metadata:plan"
    assert f'href="/usage.csv?{query}" download>CSV</a>' in body
    assert f'href="/usage.json?{query}" download>JSON</a>' in body


@pytest.mark.parametrize(
    "query,message",
    [
        ("group_by=planet", "group_by must be one of user, model, endpoint, day, tag, key"),
        ("group_by=metadata&metadata_key=a%20b", "metadata:KEY needs a key of 1-64"),
        ("group_by=user&key=nope", "no API key is named &#39;nope&#39;"),
    ],
)
def test_a_bad_breakdown_is_a_422_form_message(admin, workload, query, message):
    for url in (f"/usage?{RANGE}&{query}", f"/usage.json?{RANGE}&{query}"):
        response = admin.get(url)
        assert response.status_code == 422
        assert message in text(response) and 'name="group_by"' in text(response)


def test_an_unknown_export_format_is_refused(admin):
    response = admin.get(f"/usage.xml?{RANGE}&group_by=user")
    assert response.status_code == 422
    assert "format must be one of csv, json" in text(response)


def test_exports_need_a_login(make_console):
    response = make_console(None).get(f"/usage.json?{RANGE}&group_by=user")
    assert response.status_code in (302, 303) and "/login" in response.headers["Location"]
