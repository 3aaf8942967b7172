"""Browser tests: Debian's Chromium driven by Playwright (sync API), one browser for the
whole session. They skip when /usr/bin/chromium is missing, unless TALLY_REQUIRE_BROWSER
is set (CI sets it), then they fail. Playwright's own browser download is never used."""

from __future__ import annotations

import os
import re
import uuid
from pathlib import Path

import pytest

from tally.operators.accounts import create_operator
from tests.helpers.browser import LAPTOP
from tests.helpers.console import PASSWORD

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]


@pytest.fixture(scope="session")
def browser():
    """One headless Chromium for every browser test."""
    if not CHROMIUM.exists():
        message = f"{CHROMIUM} is missing: apt-get install chromium"
        if os.environ.get("TALLY_REQUIRE_BROWSER"):
            pytest.fail(message)
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser, tally):
    """A fresh browser tab (own cookies) at laptop size, closed before the server stops;
    fails the test on any CSP violation or script error the console causes."""
    context = browser.new_context(viewport=LAPTOP)
    context.set_default_timeout(5000)
    tab = context.new_page()
    problems: list[str] = []
    tab.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
    tab.on(
        "console",
        lambda msg: (
            problems.append(msg.text)
            if msg.type == "error" and re.search(r"Content.Security.Policy|htmx", msg.text)
            else None
        ),
    )
    tab.problems = problems
    yield tab
    context.close()
    assert not problems, problems


@pytest.fixture
def operator_of(tally):
    """Factory: an operator of ``role`` on the served Tally; returns the e-mail."""

    def factory(role: str) -> str:
        email = f"{role}-{uuid.uuid4().hex[:6]}@example.com"
        with tally.flask_app.extensions["tally"].sessions() as session:
            create_operator(session, email, role, PASSWORD, "test")
        return email

    return factory
