"""Forms in a real browser: saving and rolling back the config without a CSP violation
(at both sizes), fields one may not change looking disabled, the "needs end-user tokens"
box being a checkbox, and support testing an IdP token."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from tests.helpers.browser import DESKTOP, PHONE, csp_violations, log_in, watch_csp


@pytest.mark.parametrize("size", ["desktop", "phone"])
def test_config_save_and_rollback_cause_no_csp_violation(
    page, tally, operator_of, fast_passwords, size
):
    page.set_viewport_size(DESKTOP if size == "desktop" else PHONE)
    watch_csp(page)
    log_in(page, tally.url, operator_of("admin"))
    page.goto(tally.url + "/config")
    page.wait_for_load_state("networkidle")
    page.fill("#preview-id", "alice")
    page.select_option("select[name=hash_mode]", "sha256")
    page.select_option("select[name=forward_profile]", "on")
    profile = page.locator("[data-preview=profile]")
    expect(profile).to_contain_text("forward_profile=on does nothing in a hash mode (sha256)")
    page.fill("input[name=comment]", "try sha256")
    # A screenshot (as the walk took) leaves style="" on the inputs it hid the
    # caret of; htmx copied it onto their swapped-in twins, and the CSP refused that.
    page.screenshot(full_page=True)
    assert page.locator("#preview-id[style]").count() == 1
    page.click("text=Save as a new revision")
    expect(page.locator(".message-ok")).to_have_text("Saved revision 2.")
    expect(page.locator("#profile-note")).to_contain_text("does nothing in a hash mode")
    assert csp_violations(page) == []
    page.screenshot(full_page=True)
    page.once("dialog", lambda dialog: dialog.accept())
    page.locator("ol.history > li").nth(1).locator("text=Roll back to this").click()
    expect(page.locator(".message-ok")).to_contain_text("saved as revision 3")
    expect(page.locator("#profile-note")).to_have_count(0)
    page.fill("#preview-id", "bob")  # the preview still answers after the swaps
    expect(page.locator("[data-preview=edited]")).to_contain_text("tally_")
    page.wait_for_timeout(300)
    assert csp_violations(page) == []
    # the history shows nothing as Python: an empty value is "–"
    page.select_option("select[name=hash_mode]", "none")
    page.fill("input[name=prefix]", "")
    page.click("text=Save as a new revision")
    expect(page.locator(".message-ok")).to_have_text("Saved revision 4.")
    expect(page.locator("ol.history > li").first).to_contain_text("prefix tally → –")
    assert csp_violations(page) == []


def test_disabled_fields_look_disabled(page, tally, operator_of, fast_passwords):
    log_in(page, tally.url, operator_of("admin"))
    page.goto(tally.url + "/config")
    editable = page.locator("select[name=hash_mode]")
    enabled_look = editable.evaluate("e => getComputedStyle(e).backgroundColor")
    page.click("text=Log out")
    log_in(page, tally.url, operator_of("support"))
    page.goto(tally.url + "/config")
    for selector in ("select[name=hash_mode]", "input[name=prefix]"):
        field = page.locator(selector)
        expect(field).to_be_disabled()
        look = field.evaluate(
            "e => [getComputedStyle(e).backgroundColor, getComputedStyle(e).cursor]"
        )
        assert look[0] != enabled_look and look[1] == "not-allowed", (selector, look)
    page.goto(tally.url + "/idp")
    issuer = page.locator("input[name=issuer]")
    expect(issuer).to_be_disabled()
    assert issuer.evaluate("e => getComputedStyle(e).cursor") == "not-allowed"


@pytest.mark.parametrize("size", ["desktop", "phone"])
def test_needs_end_user_tokens_is_a_real_checkbox(page, tally, operator_of, fast_passwords, size):
    page.set_viewport_size(DESKTOP if size == "desktop" else PHONE)
    log_in(page, tally.url, operator_of("admin"))
    page.goto(tally.url + "/keys")
    box = page.locator("input[name=user_token]")
    size_of = box.bounding_box()
    assert size_of["width"] <= 24 and size_of["height"] <= 24, size_of  # not a text field
    label = page.locator("label.check")
    assert label.bounding_box()["y"] <= size_of["y"] <= label.bounding_box()["y"] + 40
    page.get_by_text("Needs end-user tokens", exact=True).click()  # the words toggle it
    expect(box).to_be_checked()
    page.fill("input[name=name]", "browser-app")
    page.fill("input[name=origins]", "https://app.example.com")
    page.click("text=Create key")
    expect(page.locator("tr[data-key=browser-app]")).to_contain_text("verified token")


def test_support_tests_an_idp_token(page, tally, operator_of, fast_passwords):
    log_in(page, tally.url, operator_of("support"))
    page.goto(tally.url + "/idp")
    expect(page.locator("text=Save")).to_have_count(0)
    page.fill("textarea[name=token]", "not-a-token")
    page.click("text=Test the token")
    expect(page.locator("#idp-verdict")).to_contain_text("Refused")
    expect(page.locator("#notice")).to_be_hidden()  # no "your role can look" answer
