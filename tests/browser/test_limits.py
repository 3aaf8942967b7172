"""Limits in a real browser: an admin sets a tier, sees a user limited after real API
calls, and resets them; every change swaps the panel in place (HTMX)."""

from __future__ import annotations

from playwright.sync_api import expect

from tests.helpers.api import chat
from tests.helpers.browser import log_in


def test_set_a_tier_see_a_user_limited_and_reset_them(page, tally, operator_of, fast_passwords):
    log_in(page, tally.url, operator_of("admin"))
    page.goto(tally.url + "/limits")
    page.evaluate("window.notReloaded = true")
    page.fill("#limits-panel input[name=scope]", "tier:default")
    page.fill("#limits-panel input[name=messages]", "2")
    page.click("text=Save >> nth=0")
    expect(page.locator(".message-ok")).to_have_text("Saved the policy of tier:default.")
    expect(page.locator('tr[data-scope="tier:default"] td').nth(1)).to_have_text("2")
    assert page.evaluate("window.notReloaded") is True  # swapped, not reloaded

    assert [chat(tally, user="heavy").status_code for _ in range(3)] == [200, 200, 429]
    page.goto(tally.url + "/limits")
    row = page.locator('tr[data-user="heavy"]')
    expect(row).to_contain_text("limited")
    expect(row).to_contain_text("messages 2 / 2")
    page.once("dialog", lambda dialog: dialog.accept())
    row.locator("button", has_text="Reset").click()
    expect(page.locator(".message-ok")).to_have_text("Reset the counters of user:heavy.")
    expect(page.locator('tr[data-user="heavy"]')).to_have_count(0)  # nothing used now
    assert chat(tally, user="heavy").status_code == 200
