"""The usage page's filters (API key, end user) hold for every figure on it: the totals,
the chart, per model, per user, the breakdown and the exports; the form shows them."""

from __future__ import annotations

import json
import re
from html import unescape

import pytest

from tests.console.test_breakdowns import table
from tests.helpers.breakdowns import END, START
from tests.helpers.console import text

RANGE = f"start={START.isoformat()}&end={END.isoformat()}"


def stats(body: str) -> dict[str, str]:
    """The totals at the top of the report: label -> value."""
    found = re.findall(
        r'<div class="stat-label">([^<]+)</div>\s*<div class="stat-value">([^<]+)</div>', body
    )
    return dict(found)


def card(body: str, title: str) -> list[list[str]]:
    """The rows of the card whose heading starts with ``title``, each a list of cells."""
    section = body.split(f"<h2>{title}", 1)[1].split("</section>", 1)[0]
    rows = re.findall(r"<tr>(.*?)</tr>", section.split("<tbody>", 1)[1], re.S)
    return [
        [
            unescape(re.sub(r"<[^>]+>", "", cell)).strip()
            for cell in re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)
        ]
        for row in rows
    ]


def chart_total(body: str) -> int:
    """The requests of every bar of the chart added up."""
    bars = re.findall(r"<title>[\d-]+: ([\d,]+)</title>", body)
    return sum(int(n.replace(",", "")) for n in bars)


def test_the_key_filter_holds_for_every_figure(admin, workload):
    body = text(admin.get(f"/usage?{RANGE}&group_by=user&key=acme"))
    # acme: ada 2 calls ($0.10 + $0.25), cy 1 ($0.003), bob 1 ($0.01); the rest is
    # globex's or keyless (the anonymous 502)
    assert stats(body) == {
        "Requests": "4",
        "Tokens": "410",
        "Cost": "$0.363",
        "Errors": "0",
        "Refused": "0",
    }
    assert chart_total(body) == 4
    assert card(body, "Per model") == [
        ["m-a", "3", "380", "$0.36", "", "0"],
        ["m-b", "1", "30", "$0.003", "", "0"],
    ]
    assert [row[:4] for row in card(body, "Per user")] == [
        ["ada Ada L calls →", "2", "360", "$0.35"],
        ["bob calls →", "1", "20", "$0.01"],
        ["cy calls →", "1", "30", "$0.003"],
    ]
    assert table(body) == [
        ["ada", "Ada L", "2", "300", "60", "60", "$0.35", "calls →"],
        ["bob", "–", "1", "10", "10", "0", "$0.01", "calls →"],
        ["cy", "–", "1", "30", "0", "0", "$0.003", "calls →"],
    ]
    assert "Every figure on this page is filtered to API key <code>acme</code>" in body


def test_the_user_filter_holds_for_every_figure(admin, workload):
    body = text(admin.get(f"/usage?{RANGE}&group_by=key&user=bob"))
    # bob: 2026-02-28 through globex (m-b, $0.05), 2026-04-01 through acme (m-a, $0.01)
    assert stats(body)["Requests"] == "2" and stats(body)["Cost"] == "$0.06"
    assert stats(body)["Tokens"] == "75"
    assert chart_total(body) == 2
    assert [row[:4] for row in card(body, "Per model")] == [
        ["m-b", "1", "55", "$0.05"],
        ["m-a", "1", "20", "$0.01"],
    ]
    assert [row[:4] for row in card(body, "Per user")] == [["bob calls →", "2", "75", "$0.06"]]
    assert [row[:2] for row in table(body)] == [["acme", "1"], ["globex", "1"]]
    assert "filtered to end user <code>bob</code>" in body


def test_key_and_user_together(admin, workload):
    body = text(admin.get(f"/usage?{RANGE}&key=acme&user=ada"))
    assert stats(body)["Requests"] == "2" and stats(body)["Cost"] == "$0.35"
    assert [row[0] for row in card(body, "Per model")] == ["m-a"]
    assert table(body) == [["m-a", "2", "300", "60", "60", "$0.35"]]
    assert "API key <code>acme</code> <a" in body and "end user <code>ada</code> <a" in body


def test_without_filters_the_page_says_it_counts_everything(admin, workload):
    body = text(admin.get(f"/usage?{RANGE}"))
    assert "counts all traffic: every API key, every end user" in body
    assert stats(body)["Requests"] == "7"


def test_the_form_shows_the_filters_of_the_url(admin, workload):
    body = text(admin.get(f"/usage?{RANGE}&group_by=key"))
    # the key filter is a list of the keys, "all keys" chosen
    select = body.split('<select name="key">', 1)[1].split("</select>", 1)[0]
    assert re.findall(r'<option value="([^"]*)"', select) == ["", "acme", "globex"]
    assert '<option value="" selected>all keys</option>' in select
    # "its users →" is a whole page: the form then holds the key, and Show keeps it
    [link] = re.findall(r'<a href="([^"]+)">its users →</a>', body.split("<tbody>", 1)[1])[:1]
    assert "hx-get" not in body.split("its users →", 1)[0].rsplit("<a ", 1)[1]
    page = text(admin.get(unescape(link)))
    select = page.split('<select name="key">', 1)[1].split("</select>", 1)[0]
    assert '<option value="acme" selected>acme</option>' in select
    assert '<option value="" selected>' not in select
    assert '<option value="user" selected>' in page
    body = text(admin.get(f"/usage?{RANGE}&user=cy"))
    assert 'name="user" value="cy"' in body


def test_exports_hold_the_filters(admin, workload):
    by_model = json.loads(text(admin.get(f"/usage.json?{RANGE}&group_by=model&user=bob")))
    assert [(r["model"], r["requests"], r["cost_usd"]) for r in by_model["rows"]] == [
        ("m-a", 1, 0.01),
        ("m-b", 1, 0.05),
    ]
    by_user = json.loads(text(admin.get(f"/usage.json?{RANGE}&group_by=user&user=ada&key=acme")))
    assert [(r["internal_id"], r["requests"]) for r in by_user["rows"]] == [("ada", 2)]
    csv = text(admin.get(f"/usage.csv?{RANGE}&group_by=day&user=cy"))
    assert csv.splitlines()[1:] == ["2026-03-15,1,30,0,0,0.003000"]
    # the page's export links carry both filters
    body = text(admin.get(f"/usage?{RANGE}&key=acme&user=ada"))
    export = re.search(r'href="(/usage\.csv[^"]+)"', body).group(1)
    assert "key=acme" in export and "user=ada" in export


@pytest.mark.parametrize(
    "query,message",
    [
        ("user=nobody", "no end user has the internal id &#39;nobody&#39;"),
        ("key=nokey", "no API key is named &#39;nokey&#39;"),
    ],
)
def test_an_unknown_filter_is_a_422_form_message(admin, workload, query, message):
    response = admin.get(f"/usage?{RANGE}&{query}")
    assert response.status_code == 422
    assert message in text(response)
    response = admin.get(f"/usage.json?{RANGE}&{query}")
    assert response.status_code == 422
