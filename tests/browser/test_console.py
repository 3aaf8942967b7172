"""The console in a real browser, against Tally served over HTTP in front of the fake
upstream: login, live config preview and history, support tracing of a real API request,
and a key created and revoked in the UI."""

from __future__ import annotations

import requests
from playwright.sync_api import expect
from sqlalchemy import select

from tally.models import AuditEntry
from tests.helpers.browser import log_in


def test_log_in_and_out(page, tally, operator_of, fast_passwords):
    email = operator_of("admin")
    page.goto(tally.url + "/usage")
    assert page.url.startswith(tally.url + "/login?next=")
    page.fill("input[name=email]", email)
    page.fill("input[name=password]", "wrong password")
    page.click("button[type=submit]")
    expect(page.locator(".message-error")).to_contain_text("Wrong e-mail or password")
    assert page.input_value("input[name=email]") == email
    page.fill("input[name=password]", "correct horse battery")
    page.click("button[type=submit]")
    page.wait_for_url(tally.url + "/usage")
    expect(page.locator("h1")).to_have_text("Usage")
    expect(page.locator(".whoami")).to_contain_text(email)
    page.click("text=Log out")
    page.wait_for_url(tally.url + "/login")
    page.goto(tally.url + "/")
    assert "/login" in page.url


def test_config_preview_updates_live_and_history_grows(page, tally, operator_of, fast_passwords):
    log_in(page, tally.url, operator_of("admin"))
    page.goto(tally.url + "/config")
    page.evaluate("window.notReloaded = true")
    edited = page.locator("[data-preview=edited]")
    page.fill("#preview-id", "alice")
    expect(edited).to_have_text("tally_" + _hmac16("alice"))
    page.select_option("select[name=hash_mode]", "none")
    expect(edited).to_have_text("tally_alice")
    page.fill("input[name=prefix]", "acme")
    expect(edited).to_have_text("acme_alice")
    expect(page.locator("[data-preview=current]")).to_have_text("tally_" + _hmac16("alice"))
    page.fill("input[name=prefix]", "bad prefix")
    expect(edited).to_contain_text("prefix must be")
    page.fill("input[name=prefix]", "acme")
    expect(edited).to_have_text("acme_alice")
    history = page.locator("ol.history > li")
    expect(history).to_have_count(1)
    page.click("text=Save as a new revision")
    expect(page.locator(".message-ok")).to_have_text("Saved revision 2.")
    expect(history).to_have_count(2)
    expect(history.first).to_contain_text("hmac-sha256 → none")
    expect(history.first).to_contain_text("tally → acme")
    expect(page.locator("[data-preview=current]")).to_have_text("acme_alice")
    # A bad value: a form message, nothing saved, what was typed still there.
    page.fill("input[name=hash_length]", "3")
    page.click("text=Save as a new revision")
    expect(page.locator(".message-error")).to_contain_text("hash_length must be")
    assert page.input_value("input[name=hash_length]") == "3"
    expect(history).to_have_count(2)
    # Roll back to revision 1: a third revision.
    page.once("dialog", lambda dialog: dialog.accept())
    history.nth(1).locator("text=Roll back to this").click()
    expect(page.locator(".message-ok")).to_contain_text("saved as revision 3")
    expect(history).to_have_count(3)
    assert page.evaluate("window.notReloaded") is True  # all of it without a page load
    # The API uses the new config at once.
    requests.post(
        tally.url + "/v1/chat/completions",
        headers={"Authorization": f"Bearer {tally.key}"},
        json={"model": "m", "messages": [{"role": "user", "content": "hi"}], "user": "bob"},
        timeout=5,
    ).raise_for_status()


def test_support_traces_an_api_request_to_its_user(
    page, tally, upstream, operator_of, fast_passwords
):
    answer = requests.post(
        tally.url + "/v1/chat/completions",
        headers={"Authorization": f"Bearer {tally.key}"},
        json={
            "model": "openai/gpt-4o-mini",
            "messages": [{"role": "user", "content": "Hello"}],
            "identity": {"id": "customer-7", "display_name": "<b>Chloé</b>"},
        },
        timeout=5,
    )
    answer.raise_for_status()
    sent = upstream.last.body["user"]
    assert sent.startswith("tally_") and "customer-7" not in sent
    agent = operator_of("support")
    log_in(page, tally.url, agent)
    page.click("nav >> text=Identities")
    page.wait_for_load_state("networkidle")  # htmx is listening before anything is typed
    page.fill("input[name=q]", sent)  # as pasted from the router's activity page
    hit = page.locator(".trace-hit")
    expect(hit).to_contain_text("customer-7")
    assert "q=" in page.url  # the search is in the address bar, so it can be shared
    hit.locator("a").click()
    expect(page.locator("h1")).to_contain_text("customer-7")
    expect(page.locator(".display-name")).to_have_text("<b>Chloé</b>")  # shown as text
    expect(page.locator("section", has_text="Upstream identifiers")).to_contain_text(sent)
    expect(page.locator("body")).to_contain_text("openai/gpt-4o-mini")
    with tally.flask_app.extensions["tally"].sessions() as session:
        lookups = session.scalars(
            select(AuditEntry.target).where(
                AuditEntry.action == "identity.lookup", AuditEntry.actor == agent
            )
        ).all()
    assert sent in lookups and "customer-7" in lookups
    # Support can look, not change.
    page.goto(tally.url + "/keys")
    expect(page.locator("text=Create key")).to_have_count(0)


def test_create_and_revoke_a_key_in_the_ui(page, tally, operator_of, fast_passwords):
    log_in(page, tally.url, operator_of("admin"))
    page.goto(tally.url + "/keys")
    page.fill("input[name=name]", "mobile-app")
    page.fill("input[name=user]", "user-99")
    page.click("text=Create key")
    secret = page.input_value("#new-key")
    assert secret.startswith("tly_")
    models = tally.url + "/v1/models"
    auth = {"Authorization": f"Bearer {secret}"}
    assert requests.get(models, headers=auth, timeout=5).status_code == 200
    row = page.locator("tr[data-key=mobile-app]")
    expect(row).to_contain_text("user-99")
    page.once("dialog", lambda dialog: dialog.accept())
    row.locator("text=Revoke").click()
    expect(page.locator("tr[data-key=mobile-app]")).to_contain_text("revoked")
    expect(page.locator("#new-key")).to_have_count(0)  # shown once, gone
    refused = requests.get(models, headers=auth, timeout=5)
    assert refused.status_code == 401
    assert refused.json()["error"]["code"] == "invalid_api_key"


def _hmac16(internal_id: str) -> str:
    import hashlib
    import hmac

    from tests.helpers.settings import HASH_KEY

    return hmac.new(HASH_KEY.encode(), internal_id.encode(), hashlib.sha256).hexdigest()[:16]


def test_an_expired_session_sends_htmx_to_the_login_page(page, tally, operator_of, fast_passwords):
    log_in(page, tally.url, operator_of("support"))
    page.goto(tally.url + "/identities")
    # no answer still on its way may set the session cookie again after it is cleared
    page.wait_for_load_state("networkidle")
    page.context.clear_cookies()  # the session ends while the page is open
    page.fill("input[name=q]", "someone")
    page.wait_for_url(tally.url + "/login?next=*")
    expect(page.locator("h1")).to_have_text("Log in to the console")
    expect(page.locator("#identity-results")).to_have_count(0)  # not inside a fragment


def test_a_browser_that_signed_in_before_is_not_locked_out_by_guessing_elsewhere(
    browser, page, tally, operator_of, fast_passwords
):
    """OWASP's device cookies in a real browser: guesses lock the account and the address
    out for strangers, while the owner's browser (its cookie: HttpOnly, SameSite=Strict,
    for /login) still signs in, even from the same address."""
    email = operator_of("admin")
    log_in(page, tally.url, email)
    page.click("text=Log out")
    page.wait_for_url(tally.url + "/login")
    [cookie] = [c for c in page.context.cookies() if c["name"].startswith("tally_device_")]
    assert (cookie["httpOnly"], cookie["sameSite"], cookie["path"]) == (True, "Strict", "/login")
    guesser = requests.Session()
    for n in range(25):
        form = guesser.get(tally.url + "/login").text
        token = form.split('name="csrf-token" content="', 1)[1].split('"', 1)[0]
        data = {"email": email, "password": f"guess {n}", "csrf_token": token}
        guesser.post(tally.url + "/login", data=data, allow_redirects=False)
    stranger = browser.new_context()
    try:
        other = stranger.new_page()
        other.goto(tally.url + "/login")
        other.fill("input[name=email]", email)
        other.fill("input[name=password]", "correct horse battery")
        other.click("button[type=submit]")
        expect(other.locator(".message-error")).to_contain_text("Too many failed attempts")
    finally:
        stranger.close()
    log_in(page, tally.url, email)
    expect(page.locator(".whoami")).to_contain_text(email)
