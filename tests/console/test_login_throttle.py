"""Failed sign-ins lock out strangers, never the operator's own browser: OWASP's device
cookies (tally/operators/throttle.py, blueprints/device_cookies.py), behind one trusted
proxy as in production (the client's address from X-Forwarded-For)."""

from __future__ import annotations

import time

import pytest
from itsdangerous import URLSafeTimedSerializer
from sqlalchemy import select

from tally.models import AuditEntry
from tests.helpers.console import PASSWORD, Console, text
from tests.helpers.settings import SECRET_KEY

OWNER_ADDRESS = "198.51.100.20"  # where the admin signs in every day
ATTACKER = "203.0.113.66"
ELSEWHERE = "192.0.2.9"  # a stranger on another network
ADMIN = "admin@example.com"


class Browser(Console):
    """A console client behind the trusted proxy, at ``address``."""

    def __init__(self, app, address: str):
        super().__init__(app)
        self.address = address

    def sign_in(self, email: str, password: str = PASSWORD):
        """Post the login form from this browser's address; the session is new after."""
        data = {"email": email, "password": password, "csrf_token": self.csrf_token()}
        response = self.client.post("/login", data=data, headers={"X-Forwarded-For": self.address})
        self.session_renewed()
        return response

    def log_out(self) -> None:
        assert self.post("/logout").status_code == 303
        self.session_renewed()

    def device_cookie(self, operator_id: int):
        return self.client.get_cookie(f"tally_device_{operator_id}", path="/login")


@pytest.fixture
def proxied(make_app, make_operator):
    """Tally behind one trusted proxy, with its shipped login limits, and an admin."""
    app = make_app(TALLY_TRUSTED_PROXIES="1")
    make_operator("admin", ADMIN)
    return app


def operator_id(app, email: str) -> int:
    from tally.operators.accounts import operator_id_of

    with app.extensions["tally"].sessions() as db:
        return operator_id_of(db, email)


def lockouts(app) -> list[AuditEntry]:
    with app.extensions["tally"].sessions() as db:
        query = select(AuditEntry).where(AuditEntry.action == "operator.lockout")
        return list(db.scalars(query.order_by(AuditEntry.id)))


def owners_browser(app) -> Browser:
    """The admin's own browser: it has signed in before (and logged out since)."""
    owner = Browser(app, OWNER_ADDRESS)
    assert owner.sign_in(ADMIN).status_code == 303
    owner.log_out()
    return owner


def guess_25_times(app, email: str = ADMIN) -> list[int]:
    attacker = Browser(app, ATTACKER)
    return [attacker.sign_in(email, f"guess number {n}").status_code for n in range(25)]


def test_an_attack_from_outside_never_locks_the_owners_browser_out(proxied):
    owner = owners_browser(proxied)
    statuses = guess_25_times(proxied)
    assert statuses[:5] == [422] * 5  # LOGIN_LIMIT_PER_ACCOUNT: 5 per minute
    assert statuses[5:] == [429] * 20
    # The address is throttled, for any account (its refusals counted: 20 per minute) ...
    other = Browser(proxied, ATTACKER).sign_in("someone-else@example.com", "guess")
    assert other.status_code == 429
    # ... and the account, for every browser it has not signed in on, even with the
    # right password.
    stranger = Browser(proxied, ELSEWHERE).sign_in(ADMIN)
    assert stranger.status_code == 429
    assert int(stranger.headers["Retry-After"]) > 0
    assert "Too many failed attempts" in text(stranger)
    # The owner's browser signs in, from its own address or the attacker's.
    assert owner.sign_in(ADMIN).status_code == 303
    assert owner.get("/").status_code == 200
    owner.address = ATTACKER
    owner.log_out()
    assert owner.sign_in(ADMIN).status_code == 303
    # Elsewhere, an unrelated account is not held back.
    assert Browser(proxied, ELSEWHERE).sign_in("nobody@example.com", "x").status_code == 422


def test_the_device_cookie_is_signed_httponly_strict_and_for_the_login_form_only(proxied):
    owner = Browser(proxied, OWNER_ADDRESS)
    failed = owner.sign_in(ADMIN, "not the password")
    assert not [c for c in failed.headers.getlist("Set-Cookie") if "tally_device_" in c]
    response = owner.sign_in(ADMIN)
    (cookie,) = [c for c in response.headers.getlist("Set-Cookie") if "tally_device_" in c]
    assert cookie.startswith(f"tally_device_{operator_id(proxied, ADMIN)}=")
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/login" in cookie
    assert "Max-Age=" in cookie
    assert ADMIN not in cookie and "Secure" not in cookie  # plain HTTP here
    first = owner.device_cookie(operator_id(proxied, ADMIN)).value
    owner.log_out()
    assert owner.sign_in(ADMIN).status_code == 303  # every sign-in renews it (a new nonce)
    assert owner.device_cookie(operator_id(proxied, ADMIN)).value != first


def _plant(browser: Browser, name: str, value: str) -> None:
    browser.client.set_cookie(name, value, path="/login")


@pytest.mark.parametrize("cookie", ["forged", "other operator's", "other secret's", "altered"])
def test_a_forged_or_foreign_device_cookie_gives_no_trust(proxied, make_operator, cookie):
    admin_id = operator_id(proxied, ADMIN)
    support = make_operator("support", "support@example.com")
    insider = Browser(proxied, ELSEWHERE)
    assert insider.sign_in(support).status_code == 303  # a device cookie of their own
    own = insider.device_cookie(operator_id(proxied, support)).value
    values = {
        "forged": "WzEsImFiYyJd.Zz9xYw.c2lnbmF0dXJl",
        "other operator's": own,  # signed, but naming the support operator
        "other secret's": URLSafeTimedSerializer("not " + SECRET_KEY, "tally.device-cookie").dumps(
            [admin_id, "nonce"]
        ),
        "altered": own[:-2] + ("AA" if not own.endswith("AA") else "BB"),
    }
    guess_25_times(proxied)
    _plant(insider, f"tally_device_{admin_id}", values[cookie])
    assert insider.sign_in(ADMIN).status_code == 429


def test_a_trusted_browser_has_its_own_lockout_and_counts_toward_no_other(make_app, make_operator):
    app = make_app(TALLY_TRUSTED_PROXIES="1", LOGIN_LIMIT_PER_DEVICE="3 per minute")
    make_operator("admin", ADMIN)
    owner = owners_browser(app)
    for _ in range(3):
        assert owner.sign_in(ADMIN, "a typo in it").status_code == 422
    locked = owner.sign_in(ADMIN)
    assert locked.status_code == 429  # this browser, locked out by itself
    assert "Too many failed attempts from this browser" in text(locked)
    # Its failures counted neither toward the account nor toward its address.
    assert Browser(app, OWNER_ADDRESS).sign_in(ADMIN).status_code == 303
    entries = lockouts(app)
    assert [(e.actor, e.target, e.after["scope"]) for e in entries] == [
        ("login throttle", ADMIN, "device")
    ]
    assert "nonce" not in str(entries[0].after)


def test_a_lockout_ends_by_itself(make_app, make_operator):
    app = make_app(
        TALLY_TRUSTED_PROXIES="1",
        LOGIN_LIMIT_PER_ACCOUNT="2 per 1 second",
        LOGIN_LIMIT_PER_IP="50 per minute",
    )
    make_operator("admin", ADMIN)
    attacker = Browser(app, ATTACKER)
    assert [attacker.sign_in(ADMIN, "guess").status_code for _ in range(3)] == [422, 422, 429]
    time.sleep(1.2)  # the window ends; nobody lifted anything
    assert Browser(app, ELSEWHERE).sign_in(ADMIN).status_code == 303


def test_lockouts_are_audited_once_each(proxied):
    owner = owners_browser(proxied)
    guess_25_times(proxied)
    Browser(proxied, ATTACKER).sign_in("someone-else@example.com", "guess")  # refused
    entries = lockouts(proxied)
    assert [(e.actor, e.target, e.after["scope"]) for e in entries] == [
        ("login throttle", ADMIN, "account"),
        ("login throttle", ATTACKER, "address"),
    ]
    assert entries[1].after["account"] == ADMIN
    assert all(e.after["until"].endswith(" UTC") for e in entries)
    assert owner.sign_in(ADMIN).status_code == 303
    audit = text(owner.get("/audit"))
    assert "operator.lockout" in audit and ATTACKER in audit


def test_without_trusted_proxies_the_forwarded_address_is_not_believed(make_app, make_operator):
    """Then every client is the socket's address: X-Forwarded-For cannot pick a fresh
    budget per attempt."""
    app = make_app(LOGIN_LIMIT_PER_ACCOUNT="100 per minute", LOGIN_LIMIT_PER_IP="3 per minute")
    for n in range(3):
        Browser(app, f"203.0.113.{n}").sign_in(f"user{n}@example.com", "guess")
    assert Browser(app, "203.0.113.99").sign_in("user9@example.com", "guess").status_code == 429


@pytest.mark.parametrize(("fail", "status"), [("open", 303), ("closed", 503)])
def test_an_unreachable_limit_storage_is_tally_ratelimit_fails_case(
    make_app, make_operator, fail, status
):
    """As for the API's limits: ``open`` signs in unthrottled (logged), ``closed`` 503."""
    from tests.helpers.loopback import free_port

    app = make_app(
        TALLY_RATELIMIT_STORAGE_URI=f"redis://127.0.0.1:{free_port()}/0",
        TALLY_RATELIMIT_FAIL=fail,
    )
    make_operator("admin", ADMIN)
    response = Browser(app, ATTACKER).sign_in(ADMIN)
    assert response.status_code == status
    if fail == "closed":
        assert "Try again shortly" in text(response)
