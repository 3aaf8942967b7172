"""Operator login and logout: sessions, throttling of failed logins, CSRF, login required
on every console page, security headers."""

from __future__ import annotations

from urllib.parse import quote, unquote

import pytest

from tests.helpers.console import PASSWORD, Console, text

PAGES = [
    "/",
    "/config",
    "/config/preview?prefix=x",
    "/identities",
    "/identities?q=tally_",
    "/identities/1",
    "/usage",
    "/usage.csv",
    "/usage.json",
    "/usage?group_by=key",
    "/keys",
    "/limits",
    "/audit",
    "/operators",
]
ACTIONS = [
    "/config",
    "/config/revisions/1/rollback",
    "/keys",
    "/keys/1/revoke",
    "/operators",
    "/operators/1/role",
    "/operators/1/active",
]


def set_cookie(response, name: str) -> str:
    """The one Set-Cookie header of ``response`` for a cookie whose name starts so."""
    (found,) = [c for c in response.headers.getlist("Set-Cookie") if c.startswith(name)]
    return found


@pytest.mark.parametrize("path", PAGES)
def test_pages_require_login(client, path):
    response = client.get(path)
    assert response.status_code == 302
    assert response.headers["Location"].startswith("/login?next=")


@pytest.mark.parametrize("path", PAGES)
def test_htmx_gets_hx_redirect_when_logged_out(client, path):
    response = client.get(path, headers={"HX-Request": "true"})
    assert response.status_code == 401
    assert response.headers["HX-Redirect"].startswith("/login?next=")
    assert b"<form" not in response.data  # nothing to swap into a fragment


@pytest.mark.parametrize("path", ACTIONS)
def test_actions_require_login(app, path):
    console = Console(app)
    response = console.post(path, {"name": "x"})
    assert response.status_code == 302
    assert response.headers["Location"].startswith("/login")
    # An expired session answers HTMX with HX-Redirect, even though its CSRF token is gone.
    response = console.client.post(path, headers={"HX-Request": "true", "X-CSRFToken": "stale"})
    assert response.status_code == 401
    assert response.headers["HX-Redirect"].startswith("/login")


def test_login_form_has_the_contract_fields(client):
    page = text(client.get("/login"))
    assert 'name="email"' in page and 'name="password"' in page


def test_login_lands_on_the_dashboard(app, make_operator):
    email = make_operator("admin")
    console = Console(app)
    response = console.login(email)
    assert response.status_code == 303
    assert response.headers["Location"] == "/"
    dashboard = console.get("/")
    assert dashboard.status_code == 200
    assert email in text(dashboard)


# ``next`` as it stands in a URL's query string (the form posts it decoded)
HOSTILE_NEXT = [
    "/%09/evil.example/x",  # a tab: browsers strip it, leaving //evil.example/x
    "/%0D/evil.example/x",
    "/%0A/evil.example/x",
    "/keys%0D%0ASet-Cookie:%20planted=1",  # CR LF: a header of its own (was a 500)
    "/%5Cevil.example",  # /\evil.example: browsers read the backslash as a slash
    "%5C%5Cevil.example",
    "/%5C/evil.example",
    "//evil.example/x",
    "///evil.example/x",
    "%2F%2Fevil.example",
    "/%2F%2Fevil.example",  # decoded: ///evil.example
    "/%252F%252Fevil.example",  # decoded twice: not a console page
    "https://evil.example/",
    "https:evil.example",
    "HTTPS://evil.example",
    "javascript:alert(document.domain)",
    "%20//evil.example",
    "/%E2%80%A8/evil.example",  # LINE SEPARATOR
    "/%E2%80%8B/evil.example",  # ZERO WIDTH SPACE
    "/.//evil.example",
    "/keys@evil.example",
    "/static/console.css",  # on the site, but not a page
    "/logout",  # POST only
    "/nowhere",
]
SAFE_NEXT = ["/keys", "/identities?q=tally_", "/usage?from=2025-01-01&to=2025-01-31", "/"]


@pytest.mark.parametrize("target", SAFE_NEXT)
def test_login_goes_to_a_console_page_named_by_next(app, make_operator, admin, target):
    response = Console(app).login(make_operator("admin"), next=target)
    assert response.status_code == 303
    assert response.headers["Location"] == target
    already = admin.get("/login?next=" + quote(target, safe="/"))
    assert already.status_code == 302
    assert already.headers["Location"] == target


@pytest.mark.parametrize("raw", HOSTILE_NEXT)
def test_login_never_leads_off_the_console_whatever_next_hides(app, make_operator, admin, raw):
    """The logged-in visitor's GET and the POST after the password both land on the
    dashboard, never on a 500."""
    already = admin.get("/login?next=" + raw)
    assert already.status_code == 302, text(already)
    assert already.headers["Location"] == "/"
    response = Console(app).login(make_operator("admin"), next=unquote(raw))
    assert response.status_code == 303, text(response)
    assert response.headers["Location"] == "/"
    assert "Set-Cookie: planted" not in str(response.headers)


@pytest.mark.parametrize("email_of", ["wrong-password", "unknown", "disabled"])
def test_failed_login_is_a_422_form_message(app, make_operator, db, email_of):
    email = make_operator("admin")
    password = PASSWORD
    if email_of == "wrong-password":
        password = "not the password"
    elif email_of == "unknown":
        email = "nobody@example.com"
    else:
        from tally.models import Operator

        db.query(Operator).filter_by(email=email).update({"is_active": False})
        db.commit()
    console = Console(app)
    response = console.login(email, password)
    assert response.status_code == 422
    page = text(response)
    assert "Wrong e-mail or password" in page
    assert f'value="{email}"' in page  # nothing typed is lost (but the password)
    assert console.get("/").status_code == 302


def test_session_cookie_is_httponly_samesite_lax_and_rotated_at_login(app, make_operator):
    email = make_operator("admin")
    console = Console(app)
    token_before = console.csrf_token()
    with console.client.session_transaction() as session:
        session["planted"] = "by an attacker"
    response = console.login(email)
    cookie = set_cookie(response, "session")
    assert "HttpOnly" in cookie
    assert "SameSite=Lax" in cookie
    assert "Secure" not in cookie  # plain HTTP here; HTTPS requests get Secure
    with console.client.session_transaction() as session:
        assert "planted" not in session
        assert session["_user_id"]
    assert console.csrf_token() != token_before


def test_session_cookie_is_secure_over_https(app, make_operator):
    email = make_operator("admin")
    console = Console(app)
    token = console.csrf_token()
    response = console.client.post(
        "/login",
        data={"email": email, "password": PASSWORD, "csrf_token": token},
        base_url="https://localhost",
        headers={"Referer": "https://localhost/login"},
    )
    assert response.status_code == 303
    assert "Secure" in set_cookie(response, "session")
    assert "Secure" in set_cookie(response, "tally_device_")


def test_logout_ends_the_session(admin):
    response = admin.post("/logout")
    assert response.status_code == 303
    assert admin.get("/").status_code == 302


def test_logout_needs_csrf(admin):
    response = admin.post("/logout", csrf=False)
    assert response.status_code == 400
    assert admin.get("/").status_code == 200


def test_login_needs_csrf(app, make_operator):
    email = make_operator("admin")
    console = Console(app)
    response = console.client.post("/login", data={"email": email, "password": PASSWORD})
    assert response.status_code == 400
    assert console.get("/").status_code == 302


def test_disabled_operator_is_logged_out_at_once(app, admin, support, db):
    from tally.models import Operator

    assert support.get("/").status_code == 200
    db.query(Operator).filter_by(email=support.email).update({"is_active": False})
    db.commit()
    assert support.get("/").status_code == 302


def test_role_change_takes_effect_at_once(admin, support, db):
    from tally.models import Operator

    assert support.get("/operators").status_code == 403
    db.query(Operator).filter_by(email=support.email).update({"role": "admin"})
    db.commit()
    assert support.get("/operators").status_code == 200


def test_failed_logins_are_throttled_per_account(make_app, make_operator):
    app = make_app(LOGIN_LIMIT_PER_ACCOUNT="3 per minute", LOGIN_LIMIT_PER_IP="100 per minute")
    make_operator("admin", "victim@example.com")
    console = Console(app)
    for _ in range(3):
        assert console.login("victim@example.com", "guess").status_code == 422
    throttled = console.login("victim@example.com", PASSWORD)  # even the right password
    assert throttled.status_code == 429
    assert int(throttled.headers["Retry-After"]) > 0
    assert "Too many failed attempts" in text(throttled)
    # Another account from the same address is not affected.
    make_operator("admin", "other@example.com")
    assert Console(app).login("other@example.com").status_code == 303


def test_failed_logins_are_throttled_per_ip(make_app):
    app = make_app(LOGIN_LIMIT_PER_ACCOUNT="100 per minute", LOGIN_LIMIT_PER_IP="4 per minute")
    console = Console(app)
    for n in range(4):
        assert console.login(f"user{n}@example.com", "guess").status_code == 422
    assert console.login("user9@example.com", "guess").status_code == 429


def test_successful_logins_are_not_throttled(make_app, make_operator):
    app = make_app(LOGIN_LIMIT_PER_ACCOUNT="2 per minute", LOGIN_LIMIT_PER_IP="2 per minute")
    make_operator("admin", "busy@example.com")
    for _ in range(5):
        assert Console(app).login("busy@example.com").status_code == 303


@pytest.mark.parametrize("path", ["/login", "/", "/config", "/nope"])
def test_security_headers_on_console_pages(admin, path):
    response = admin.get(path)
    csp = response.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "style-src 'self'" in csp
    assert "unsafe-inline" not in csp
    assert response.headers["X-Frame-Options"] == "DENY"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Referrer-Policy"]
    assert response.headers["Cache-Control"] == "no-store"


def test_api_is_left_to_its_bearer_keys(client, make_key):
    """The JSON API is CSRF-exempt and never redirects to the login page."""
    response = client.post("/v1/chat/completions", json={"model": "x", "messages": []})
    assert response.status_code == 401
    assert response.is_json
    key = make_key()
    response = client.get("/v1/models", headers={"Authorization": f"Bearer {key}"})
    assert response.status_code == 200


@pytest.mark.parametrize("path", ["/v1/models", "/v1/nope", "/healthz"])
def test_api_and_probes_carry_no_console_machinery(admin, make_key, path):
    """The API, the demo upstream and the probes are served by the lean app (app.py):
    even with an operator's session cookie they set no cookie, send no console headers,
    and a path they do not know is a JSON 404, not the console's page."""
    key = make_key()
    response = admin.client.get(path, headers={"Authorization": f"Bearer {key}"})
    assert response.status_code in (200, 404)
    assert response.is_json
    assert "Set-Cookie" not in response.headers
    assert "Content-Security-Policy" not in response.headers
    assert "Vary" not in response.headers  # a session touched would add Vary: Cookie


@pytest.mark.parametrize(
    ("new", "why"),
    [
        ("Summer2026", "similar to a commonly used password"),
        ("tallyconsole", "this product&#39;s words"),
        ("short", "at least 8 characters"),
    ],
)
def test_a_guessable_new_password_is_refused_with_why(app, admin, new, why):
    response = admin.post("/account/password", {"current_password": PASSWORD, "new_password": new})
    assert response.status_code == 422
    assert why in text(response)
    admin.post("/logout")
    assert Console(app).login(admin.email, new).status_code == 422
    assert Console(app).login(admin.email).status_code == 303  # the old one still works
