"""What the browser tests share besides their fixtures (tests/browser/conftest.py): the
viewport sizes, and logging in through the form."""

from __future__ import annotations

from tests.helpers.console import PASSWORD

LAPTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}


def log_in(page, base_url: str, email: str) -> None:
    """Log in through the form, as a person would."""
    page.goto(base_url + "/login")
    page.fill("input[name=email]", email)
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(base_url + "/")
