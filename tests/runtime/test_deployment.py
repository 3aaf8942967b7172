"""A deployment fit for the internet: behind a reverse proxy (TALLY_TRUSTED_PROXIES,
werkzeug's ProxyFix) and with sessions that end server-side."""

from __future__ import annotations

import uuid

import pytest

from tally.operators.accounts import create_operator, set_operator_active
from tally.settings import SettingsError, load_settings
from tests.helpers.console import PASSWORD, Console


def _operator(app, role: str = "admin") -> str:
    email = f"{role}-{uuid.uuid4().hex[:6]}@example.com"
    with app.extensions["tally"].sessions() as session:
        create_operator(session, email, role, PASSWORD, "test")
    return email


def _failed_login(console: Console, forwarded_for: str):
    data = {"email": "nobody@example.com", "password": "guess", "csrf_token": console.csrf_token()}
    return console.client.post("/login", data=data, headers={"X-Forwarded-For": forwarded_for})


@pytest.mark.parametrize(("proxies", "throttled"), [(None, True), ("1", False)])
def test_x_forwarded_for_is_honoured_only_with_trusted_proxies(
    make_app, fast_passwords, proxies, throttled
):
    overrides = {"TALLY_TRUSTED_PROXIES": proxies} if proxies else {}
    app = make_app(
        LOGIN_LIMIT_PER_ACCOUNT="100 per minute", LOGIN_LIMIT_PER_IP="2 per minute", **overrides
    )
    console = Console(app)
    for _ in range(2):
        assert _failed_login(console, "203.0.113.7").status_code == 422
    assert _failed_login(console, "203.0.113.7").status_code == 429
    # Another client behind the same proxy: its own budget, but only when the proxy's
    # X-Forwarded-For is trusted (without it, anyone could pick their address).
    other = _failed_login(console, "198.51.100.9")
    assert other.status_code == (429 if throttled else 422)


@pytest.mark.parametrize(("proxies", "secure"), [(None, False), ("1", True)])
def test_the_session_cookie_is_secure_behind_an_https_proxy(
    make_app, fast_passwords, proxies, secure
):
    overrides = {"TALLY_TRUSTED_PROXIES": proxies} if proxies else {}
    app = make_app(**overrides)
    email = _operator(app)
    console = Console(app)
    data = {"email": email, "password": PASSWORD, "csrf_token": console.csrf_token()}
    response = console.client.post(
        "/login",
        data=data,
        headers={"X-Forwarded-Proto": "https", "Referer": "https://localhost/login"},
    )
    assert response.status_code == 303, response.get_data(as_text=True)
    for cookie in response.headers.getlist("Set-Cookie"):  # the session, the device cookie
        assert ("Secure" in cookie) is secure


def test_trusted_proxies_must_be_a_small_whole_number(tmp_path):
    assert load_settings(str(tmp_path), {}).trusted_proxies == 0
    assert load_settings(str(tmp_path), {"TALLY_TRUSTED_PROXIES": "2"}).trusted_proxies == 2
    for bad in ("-1", "one", "1.5", "99"):
        with pytest.raises(SettingsError, match="TALLY_TRUSTED_PROXIES"):
            load_settings(str(tmp_path), {"TALLY_TRUSTED_PROXIES": bad})


def _copy_of(app, console: Console) -> Console:
    """Another browser holding a copy of ``console``'s session cookie."""
    thief = Console(app)
    cookie = console.client.get_cookie("session")
    thief.client.set_cookie(cookie.key, cookie.value, domain=cookie.domain)
    return thief


def test_a_copied_session_cookie_is_refused_after_logout(app, make_console):
    admin = make_console("admin")
    thief = _copy_of(app, admin)
    assert thief.get("/").status_code == 200
    assert admin.post("/logout").status_code == 303
    assert thief.get("/").status_code == 302
    assert "/login" in thief.get("/").headers["Location"]


def test_a_password_change_ends_every_other_session(app, make_console):
    admin = make_console("admin")
    thief = _copy_of(app, admin)
    changed = admin.post(
        "/account/password",
        {"current_password": PASSWORD, "new_password": "a brand new passphrase"},
    )
    assert changed.status_code == 303, changed.get_data(as_text=True)
    assert admin.get("/").status_code == 200  # this session continues
    assert thief.get("/").status_code == 302
    admin.session_renewed()
    wrong = admin.post(
        "/account/password", {"current_password": "nope", "new_password": "another one!"}
    )
    assert wrong.status_code == 422 and "current password is wrong" in wrong.get_data(True)


def test_disabling_an_operator_ends_its_sessions_for_good(app, make_console):
    support = make_console("support")
    copy = _copy_of(app, support)
    with app.extensions["tally"].sessions() as db:
        operator_id = _operator_id(db, support.email)
        set_operator_active(db, operator_id, False, "test")
        assert support.get("/").status_code == 302
        set_operator_active(db, operator_id, True, "test")
    assert support.get("/").status_code == 302  # re-enabled: old cookies stay dead
    assert copy.get("/").status_code == 302


def _operator_id(db, email: str) -> int:
    from sqlalchemy import select

    from tally.models import Operator

    return db.scalars(select(Operator.id).where(Operator.email == email)).one()
