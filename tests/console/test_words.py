"""What the console's pages say, in one voice: money in one format, one placeholder for
nothing, Prices in the nav, a note where a setting does nothing, a warning where a limit
waits for its user."""

from __future__ import annotations

import html

import pytest

from blueprints.console.base import money, shown
from tests.console.test_config import FORM
from tests.helpers.api import chat
from tests.helpers.console import text


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, "–"),
        (0, "$0.00"),
        (0.000088, "$0.000088"),
        (0.0000881234, "$0.000088"),
        (0.00042, "$0.00042"),
        (0.0012, "$0.0012"),
        (0.0262, "$0.0262"),
        (0.4721, "$0.4721"),
        (0.499912, "$0.4999"),
        (0.5, "$0.50"),
        (0.999, "$0.999"),
        (1, "$1.00"),
        (1234.5, "$1,234.50"),
        (-0.25, "-$0.25"),
    ],
)
def test_one_money_format(value, expected):
    assert money(value) == expected


@pytest.mark.parametrize("cost", [1e-9, 3.3e-7, 0.000049, 0.00499])
def test_a_cost_that_is_not_zero_never_reads_as_zero(cost):
    assert money(cost).strip("$0.") != ""


@pytest.mark.parametrize(
    ("value", "expected"),
    [(None, "–"), ("", "–"), ([], "–"), (False, "no"), (True, "yes"), (["a", "b"], "a, b")],
)
def test_stored_values_read_as_words(value, expected):
    assert shown(value) == expected


def test_prices_are_in_the_nav_after_usage(support):
    page = text(support.get("/"))
    nav = page.split('<nav class="nav"', 1)[1].split("</nav>", 1)[0]
    assert '<a href="/usage/prices">Prices</a>' in nav
    assert nav.index(">Usage<") < nav.index(">Prices<") < nav.index(">API keys<")
    current = text(support.get("/usage/prices")).split('<nav class="nav"', 1)[1]
    assert '<a href="/usage/prices" aria-current="page">Prices</a>' in current


@pytest.mark.parametrize(
    ("fields", "note"),
    [
        (
            {"hash_mode": "hmac-sha256", "dialect": "orq"},
            "forward_profile=on does nothing in a hash mode (hmac-sha256)",
        ),
        (
            {"hash_mode": "sha256", "dialect": "openrouter"},
            "forward_profile=on does nothing in a hash mode (sha256)",
        ),
        (
            {"hash_mode": "none", "dialect": "openrouter"},
            "forward_profile=on does nothing with the openrouter dialect",
        ),
        ({"hash_mode": "none", "dialect": "orq"}, None),
    ],
)
@pytest.mark.parametrize("htmx", [True, False])
def test_forward_profile_where_it_does_nothing_says_so(admin, fields, note, htmx):
    form = {**FORM, **fields, "forward_profile": "on"}
    answer = admin.post("/config", form, htmx=htmx)
    page = html.unescape(text(answer if htmx else admin.get("/config")))
    assert "Saved revision 2." in page
    if note:
        assert note in page
        assert "no profile field ever leaves then" in page or "only orq forwards" in page
    else:
        assert "forward_profile=on does nothing" not in page
    # off again: no note
    admin.post("/config", {**form, "forward_profile": "off"})
    assert "forward_profile=on does nothing" not in html.unescape(text(admin.get("/config")))


def test_the_preview_warns_before_saving(admin):
    fields = {**FORM, "forward_profile": "on", "preview_id": "ada"}
    page = html.unescape(text(admin.get("/config/preview", query_string=fields, htmx=True)))
    assert 'data-preview="profile"' in page
    assert "forward_profile=on does nothing in a hash mode (hmac-sha256)" in page


@pytest.mark.parametrize("htmx", [True, False])
def test_a_limit_for_a_user_never_seen_is_saved_with_a_warning(admin, htmx):
    answer = admin.post("/limits/policies", {"scope": "user:ghost-7", "messages": "5"}, htmx=htmx)
    page = text(answer if htmx else admin.get("/limits"))
    assert "Saved the policy of user:ghost-7." in page
    assert (
        "no end user with internal id ghost-7 has been seen yet; "
        "the limit will apply when they are." in page
    )
    assert '<tr data-scope="user:ghost-7">' in page


def test_a_limit_for_a_known_user_has_no_warning(tally_admin, tally):
    assert chat(tally, user="seen-1").status_code == 200
    form = {"scope": "user:seen-1", "rpm": "5"}
    page = text(tally_admin.post("/limits/policies", form, htmx=True))
    assert "Saved the policy of user:seen-1." in page
    assert "has been seen yet" not in page


def test_the_needs_end_user_tokens_box_is_a_checkbox(admin):
    page = text(admin.get("/keys"))
    label = page.split('<label class="check">', 1)[1].split("</label>", 1)[0]
    assert '<input type="checkbox" name="user_token">' in label
    assert "Needs end-user tokens" in label
