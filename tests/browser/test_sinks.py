"""``/sinks`` in a real browser: an admin adds a webhook sink (HTMX swap, the secret shown
once), sees its backlog and a parked event, and a phone reads the page without
scrolling sideways."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from tally.sinks.delivery import deliver_pass
from tests.helpers.api import chat
from tests.helpers.browser import PHONE, log_in
from tests.helpers.receivers import Receiver

# the test sends with deliver_pass, at the time it says: no loop of the app's races it
pytestmark = pytest.mark.manual_delivery


@pytest.fixture
def receiver():
    found = Receiver()
    yield found
    found.close()


def test_add_a_sink_and_see_its_state(page, tally, receiver, operator_of, fast_passwords, tmp_path):
    log_in(page, tally.url, operator_of("admin"))
    page.goto(tally.url + "/sinks")
    page.fill("input[name=name]", "billing-hook")
    page.select_option("select[name=kind]", "webhook")
    page.fill("input[name=url]", receiver.url + "/hook")
    page.select_option("select[name=events]", "usage")
    page.click("button:has-text('Add sink')")
    secret = page.locator("#new-sink-secret")
    expect(secret).to_be_visible()
    assert secret.input_value().startswith("whsec_")
    served = chat(tally, user="ada").headers["X-Request-Id"]
    receiver.refuse[served] = 422
    runtime = tally.flask_app.extensions["tally"]
    deliver_pass(runtime.sessions, runtime.settings.secret_key)
    chat(tally, user="bob")
    page.goto(tally.url + "/sinks")
    row = page.locator("tr[data-sink='billing-hook']")
    expect(row.locator("td[data-label=Backlog]")).to_have_text("1")
    expect(row.locator("td[data-label=Parked]")).to_have_text("1")
    expect(row).to_contain_text("HTTP 422")
    expect(page.locator("#new-sink-secret")).to_have_count(0)
    expect(page.get_by_text("Parked events of billing-hook")).to_be_visible()
    page.screenshot(path=str(tmp_path / "sinks.png"), full_page=True)
    page.set_viewport_size(PHONE)
    page.goto(tally.url + "/sinks")
    width = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
    page.screenshot(path=str(tmp_path / "sinks-phone.png"), full_page=True)
    assert width[0] <= width[1], width
