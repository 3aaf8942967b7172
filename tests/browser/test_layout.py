"""Every main page at laptop and phone size, on demo data: no CSP violation, no script
error, nothing wider than a phone's screen. With TALLY_SCREENSHOTS=1 the screenshots are
written to docs/screenshots/ (``TALLY_SCREENSHOTS=1 ./scripts/test tests/browser``)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tally.demo.seed import seed_demo_traffic
from tally.operators.accounts import create_operator
from tally.tracking.store import active_config, save_config
from tests.helpers.browser import LAPTOP, PHONE, log_in
from tests.helpers.console import PASSWORD

SHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
PAGES = {
    "dashboard": "/",
    "config": "/config?preview_id=user_123",
    "identities": "/identities?q=demo_user_0000",
    "users": "/identities?sort=cost",
    "identity": "/identities/1",
    "usage": "/usage",
    "usage-of-a-user": "/usage?user=demo_user_00001&group_by=model",
    "usage-by-key": "/usage?group_by=key",
    "usage-by-tag": "/usage?group_by=tag",
    "prices": "/usage/prices",
    "admin-tokens": "/keys/admin-tokens",
    "keys": "/keys",
    "audit": "/audit",
    "operators": "/operators",
}


@pytest.fixture
def demo(tally, fast_passwords):
    """Thirty days of demo traffic, a config change and a few keys."""
    runtime = tally.flask_app.extensions["tally"]
    with runtime.sessions() as session:
        seed_demo_traffic(session, runtime.hash_key, requests=3000, users=40)
        config = active_config(session).with_fields({"prefix": "acme", "hash_length": "20"})
        save_config(session, config, "ops@example.com", "a longer hash for the new router")
        create_operator(session, "help@example.com", "support", PASSWORD, "ops@example.com")
    return tally


@pytest.mark.parametrize("size", ["laptop", "phone"])
def test_main_pages_fit_and_load_cleanly(browser, page, demo, operator_of, fast_passwords, size):
    page.set_viewport_size(LAPTOP if size == "laptop" else PHONE)
    save = bool(os.environ.get("TALLY_SCREENSHOTS"))
    suffix = "" if size == "laptop" else "-phone"
    if save:
        SHOTS.mkdir(parents=True, exist_ok=True)
        page.goto(demo.url + "/login")
        page.screenshot(path=SHOTS / f"login{suffix}.png")
    log_in(page, demo.url, operator_of("admin"))
    page.goto(demo.url + "/keys")
    page.fill("input[name=name]", "web-backend")
    page.click("text=Create key")
    page.wait_for_selector("#new-key")
    for name, path in PAGES.items():
        response = page.goto(demo.url + path)
        assert response.status == 200, path
        overflow = page.evaluate(
            "document.documentElement.scrollWidth - document.documentElement.clientWidth"
        )
        assert overflow <= 1, f"{path} is {overflow}px wider than the {size} screen"
        if save:
            page.screenshot(path=SHOTS / f"{name}{suffix}.png", full_page=size == "laptop")
