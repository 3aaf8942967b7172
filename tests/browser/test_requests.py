"""The request log in a real browser: calls made over HTTP show up newest first; the
status select narrows the log in place (HTMX) and the address follows; a support agent
pages back and opens one call; a phone reads it without the page scrolling sideways."""

from __future__ import annotations

from playwright.sync_api import expect

from tests.helpers.api import chat
from tests.helpers.browser import PHONE, log_in
from tests.helpers.limits import set_limits


def test_filter_page_and_open_a_call(page, tally, upstream, operator_of, fast_passwords):
    served = [chat(tally, user="ada").headers["X-Request-Id"] for _ in range(2)]
    set_limits(tally.flask_app, "user:ada", "messages=2")
    refused = chat(tally, user="ada")
    assert refused.status_code == 429
    log_in(page, tally.url, operator_of("support"))
    page.goto(tally.url + "/requests")
    rows = page.locator("#request-log tbody tr")
    expect(rows).to_have_count(3)
    expect(rows.first).to_have_attribute("data-request-id", refused.headers["X-Request-Id"])
    page.evaluate("window.notReloaded = true")
    page.select_option("select[name=status]", "refused")
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text("429 rate_limit_exceeded")
    assert page.url.endswith("/requests?status=refused")
    assert page.evaluate("window.notReloaded") is True  # swapped, not reloaded
    page.select_option("select[name=status]", "ok")
    expect(rows).to_have_count(2)
    page.click(f"tr[data-request-id='{served[0]}'] td:first-child a")
    page.wait_for_url(tally.url + f"/requests/{served[0]}")
    expect(page.locator("h1")).to_contain_text(served[0])
    expect(page.locator("dd").filter(has_text="tally_").first).to_be_visible()
    page.set_viewport_size(PHONE)
    for url in (f"/requests/{served[0]}", "/requests"):
        page.goto(tally.url + url)
        width = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
        assert width[0] <= width[1], (url, width)
