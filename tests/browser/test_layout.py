"""Every console page, found from the app's routes, walked in Chromium as admin and as
support at phone size (390×844) and at 1366×900, on demo data: no CSP violation, no
script error, never wider than the screen; the nav on one line at 1366 px (with room for
one more entry) and scrolled to the current page on a phone.

``TALLY_SCREENSHOTS=1 ./scripts/test tests/browser/test_layout.py`` also writes a
screenshot of every page at both sizes to docs/screenshots/ (``NAME.png`` and
``NAME-phone.png``)."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from playwright.sync_api import expect

from blueprints.console.base import NAVIGATION
from tally.demo.seed import seed_demo_traffic
from tally.keys.admin_tokens import create_admin_token
from tally.keys.api_keys import create_api_key
from tally.limits.policy_store import set_policy
from tally.operators.accounts import create_operator
from tally.tracking.store import active_config, save_config
from tally.usage.price_table import set_price
from tests.helpers.browser import DESKTOP, PHONE, csp_violations, log_in, watch_csp
from tests.helpers.console import PASSWORD

SHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
# Routes that are not pages (files), and pages worth seeing in more than one state.
NOT_PAGES = {"console.usage_export"}
VARIANTS = {
    "usage-by-key": "/usage?group_by=key",
    "usage-by-user": "/usage?group_by=user",
    "identities-search": "/identities?q=demo_user_0000",
    "users-by-cost": "/identities?sort=cost",
    "usage-of-a-user": "/usage?user=demo_user_00001&group_by=model",
    "requests-errors": "/requests?status=error",
}
# pages whose endpoint names them like another page
NAMES = {"console.requests_show": "request"}
# admin-only pages (the navigation's own flag): 403 for support
SUPPORT_REFUSED = {endpoint for endpoint, _label, admin_only in NAVIGATION if admin_only}


@pytest.fixture
def demo(tally, fast_passwords):
    """Thirty days of demo traffic, a config change, prices, limits, keys and tokens,
    and a support operator."""
    runtime = tally.flask_app.extensions["tally"]
    with runtime.sessions() as session:
        seed_demo_traffic(session, runtime.hash_key, requests=3000, users=40)
        config = active_config(session).with_fields({"prefix": "acme", "hash_length": "20"})
        save_config(session, config, "ops@example.com", "a longer hash for the new router")
        create_operator(session, "help@example.com", "support", PASSWORD, "ops@example.com")
        set_price(session, "openai/gpt-4o-mini", 0.15, 0.6, 0.075, "ops@example.com")
        set_price(session, "anthropic/claude-sonnet-4", 3, 15, None, "ops@example.com")
        set_policy(session, "tier:default", {"daily_budget": 0.5}, "ops@example.com")
        set_policy(session, "tier:pro", {"messages": 5000, "rpm": 60}, "ops@example.com")
        set_policy(session, "user:demo_user_00000", {"messages": 900}, "ops@example.com")
        create_api_key(session, "web-backend", "ops@example.com")
        create_api_key(
            session,
            "browser-app",
            "ops@example.com",
            user_token=True,
            origins=["https://app.example.com", "https://staging.example.com"],
        )
        create_api_key(session, "support-bot", "ops@example.com", "demo_user_00001")
        create_admin_token(session, "bi-nightly", "ops@example.com")
    return tally


def console_pages(flask_app) -> list[tuple[str, str]]:
    """(name, rule) of every page of the console: each GET route of the console and
    the account page, named by its endpoint (``console.identity_show``: ``identity``)."""
    pages = []
    for rule in flask_app.url_map.iter_rules():
        endpoint = rule.endpoint
        if not endpoint.startswith("console.") and endpoint != "auth.password":
            continue
        if "GET" not in rule.methods or endpoint in NOT_PAGES:
            continue
        name = NAMES.get(endpoint) or re.sub(r"_(page|list|show)$", "", endpoint.split(".", 1)[1])
        pages.append((name.replace("_", "-"), rule.rule))
    assert len(pages) >= 12, pages
    return pages


def walk(page, base_url: str, pages: list[tuple[str, str]]):
    """Visit every page; a rule with a parameter (``/identities/<int:user_id>``) is
    reached through the first link to it on a page already seen. Yields (name, path,
    response) with the page loaded."""
    links: list[str] = []
    todo = [(n, r) for n, r in pages if "<" not in r] + [(n, p) for n, p in VARIANTS.items()]
    todo += [(n, r) for n, r in pages if "<" in r]
    for name, rule in todo:
        path = rule
        if "<" in rule:
            pattern = re.compile("^" + re.sub(r"<[^>]+>", "[^/?#]+", rule) + "$")
            path = next((link for link in links if pattern.match(link)), None)
            assert path, f"no page links to {rule}"
        response = page.goto(base_url + path)
        links += page.eval_on_selector_all(
            "main a[href^='/']", "links => links.map(a => a.getAttribute('href'))"
        )
        yield name, path, response


def fits(page) -> int:
    """How many pixels the page is wider than the screen (0: it fits)."""
    return page.evaluate("Math.max(0, document.documentElement.scrollWidth - window.innerWidth)")


@pytest.mark.parametrize("role", ["admin", "support"])
def test_every_page_reads_on_a_phone(page, demo, operator_of, fast_passwords, role):
    page.set_viewport_size(PHONE)
    watch_csp(page)
    log_in(page, demo.url, operator_of(role))
    seen = []
    for name, path, response in walk(page, demo.url, console_pages(demo.flask_app)):
        refused = role == "support" and any(
            rule.endpoint in SUPPORT_REFUSED
            for rule in demo.flask_app.url_map.iter_rules()
            if rule.rule == path
        )
        assert response.status == (403 if refused else 200), path
        assert fits(page) == 0, f"{path} is {fits(page)}px wider than a phone"
        assert csp_violations(page) == [], path
        # the current page's nav entry is scrolled into view, inside the nav's box
        current = page.locator(".nav [aria-current=page]")
        if current.count():
            nav, link = page.locator(".nav").bounding_box(), current.bounding_box()
            assert link["x"] >= nav["x"] - 1, path
            assert link["x"] + link["width"] <= nav["x"] + nav["width"] + 1, path
        seen.append(name)
    assert {"dashboard", "config", "identities", "identity", "usage", "prices"} <= set(seen)
    assert {"keys", "keys-admin-tokens", "idp", "limits", "audit", "operators"} <= set(seen)


def test_phone_details(page, demo, operator_of, fast_passwords):
    page.set_viewport_size(PHONE)
    log_in(page, demo.url, operator_of("admin"))
    width = PHONE["width"]

    def on_screen(locator) -> None:
        for box in (locator.nth(i).bounding_box() for i in range(locator.count())):
            assert box and box["x"] >= 0 and box["x"] + box["width"] <= width, box

    # the prices' values are on the screen, not in a part of the table scrolled away
    page.goto(demo.url + "/usage/prices")
    cells = page.locator("#prices tr[data-model='openai/gpt-4o-mini'] td")
    expect(cells.nth(1)).to_have_text("$0.15")
    expect(cells.nth(3)).to_have_text("$0.075")
    on_screen(page.locator("#prices td:visible"))
    on_screen(page.locator("#prices-audit td:visible"))
    # the limits' recent changes neither pan the page nor scroll inside their card
    page.goto(demo.url + "/limits")
    on_screen(page.locator("#limits-audit td:visible"))
    on_screen(page.locator("#policies td:visible"))
    # the top users' key columns: who, requests, cost
    page.goto(demo.url + "/")
    headers = page.locator("#top-users th")
    visible = [h.inner_text().strip().lower() for h in headers.all() if h.is_visible()]
    assert visible == ["end user", "requests", "cost"]
    on_screen(page.locator("#top-users tbody tr:first-child td:visible"))
    # the account link (change password) is on the screen
    who = page.locator(".whoami a.who")
    expect(who).to_be_visible()
    on_screen(who)
    who.click()
    expect(page.locator("h1")).to_have_text("Change your password")
    # the nav shows the last entry's page without scrolling by hand
    page.goto(demo.url + "/operators")
    on_screen(page.locator(".nav [aria-current=page]"))


@pytest.mark.parametrize("role", ["admin", "support"])
def test_the_nav_is_one_line_at_1366(page, demo, operator_of, fast_passwords, role):
    page.set_viewport_size(DESKTOP)
    log_in(page, demo.url, operator_of(role))
    labels = page.locator(".nav a").all_inner_texts()
    assert "Prices" in labels and labels.index("Prices") > labels.index("Usage")
    # room for one more entry after Usage ("Requests"), whoever is logged in
    page.evaluate(
        """() => {
          const nav = document.querySelector(".nav");
          if ([...nav.querySelectorAll("a")].some(a => a.textContent === "Requests")) return;
          const usage = [...nav.querySelectorAll("a")].find(a => a.textContent === "Usage");
          const extra = usage.cloneNode(true);
          extra.textContent = "Requests";
          extra.removeAttribute("aria-current");
          usage.after(extra);
        }"""
    )
    row = page.evaluate(
        """() => {
          const nav = document.querySelector(".nav");
          const tops = [...nav.querySelectorAll("a")].map(a => a.getBoundingClientRect().top);
          const parts = [".brand", ".nav", ".whoami"].map(
            s => document.querySelector(s).getBoundingClientRect().top);
          return {
            tops: [...new Set(tops.map(Math.round))],
            hidden: nav.scrollWidth - nav.clientWidth,
            rows: parts.map(Math.round),
            email: getComputedStyle(document.querySelector(".who-email")).display,
          };
        }"""
    )
    assert len(row["tops"]) == 1, row  # one line of entries
    assert row["hidden"] <= 0, row  # none of them scrolled out of sight
    assert max(row["rows"]) - min(row["rows"]) < 20, row  # brand, nav, who: one row
    assert row["email"] != "none"


@pytest.mark.skipif(not os.environ.get("TALLY_SCREENSHOTS"), reason="TALLY_SCREENSHOTS unset")
@pytest.mark.parametrize("size", ["desktop", "phone"])
def test_screenshots(browser, page, demo, operator_of, fast_passwords, size):
    """docs/screenshots/: every page as an admin sees it, at 1366×900 and 390×844."""
    page.set_viewport_size(DESKTOP if size == "desktop" else PHONE)
    suffix = "" if size == "desktop" else "-phone"
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.goto(demo.url + "/login")
    page.screenshot(path=SHOTS / f"login{suffix}.png")
    log_in(page, demo.url, operator_of("admin"))
    pages = [(n, r) for n, r in console_pages(demo.flask_app) if n != "config-preview"]
    for name, _path, response in walk(page, demo.url, pages):
        assert response.status == 200
        page.screenshot(path=SHOTS / f"{name}{suffix}.png", full_page=True)
