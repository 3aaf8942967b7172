"""Every console route, taken from the app's URL map: each state change needs the CSRF
token and a support operator's is refused (403), and either refusal changes nothing in
the database; every page answers each role as the role rule says. A route added
tomorrow is walked tomorrow: nothing here lists the routes (tests/console/routes.py)."""

from __future__ import annotations

import pytest

from blueprints.console import base
from blueprints.console.base import NAVIGATION
from tests.console.routes import (
    CHANGING,
    CSRF_MESSAGE,
    READ_ONLY_POSTS,
    SAMPLE_FORMS,
    build_world,
    console_rules,
    pages,
    sample_form,
    state_changes,
    url_of,
)
from tests.helpers.console import Console, text
from tests.helpers.snapshot import changes, reflect, snapshot

# Pages only admins see (the navigation's own flag).
ADMIN_ONLY = {endpoint for endpoint, _label, admin_only in NAVIGATION if admin_only}
# State changes any logged-in operator may make, with the reason.
ANY_ROLE = {
    "auth.login": "anyone may log in (again), whatever their role",
    "auth.logout": "everyone may log out",
    "auth.password": "every operator changes their own password",
}
SUPPORT_REFUSED = "Your role (support) can look, not change."


@pytest.fixture
def world(app, admin, support):
    """One of everything the routes act on (tests/console/routes.py)."""
    return build_world(app, admin.email, support.email)


@pytest.fixture
def tables(app):
    """Take a snapshot of every table (reflected once)."""
    engine = app.extensions["tally"].engine
    metadata = reflect(engine)
    return lambda: snapshot(engine, metadata)


def bad_tokens(form: dict, foreign: str) -> dict[str, tuple[dict, dict]]:
    """The ways a forged request comes: (form, headers) by name. ``foreign`` is a real
    token of another operator's session."""
    htmx = {"HX-Request": "true"}
    return {
        "no token": (form, {}),
        "a made-up token": ({**form, "csrf_token": "forged-token"}, {}),
        "another session's token": ({**form, "csrf_token": foreign}, {}),
        "another session's token over htmx": (form, {**htmx, "X-CSRFToken": foreign}),
    }


def test_every_state_change_needs_the_csrf_token_and_changes_nothing(
    app, admin, support, world, tables
):
    walked, failures = [], []
    for rule, method in state_changes(app):
        url = url_of(rule, world)
        attempts = bad_tokens(sample_form(rule.endpoint, world), support.csrf_token())
        for how, (form, headers) in attempts.items():
            before = tables()
            response = admin.client.open(url, method=method, data=form, headers=headers)
            changed = changes(before, tables())
            walked.append(rule.endpoint)
            if response.status_code != 400 or CSRF_MESSAGE not in text(response):
                failures.append(f"{method} {url} with {how}: {response.status_code}")
            if changed:
                failures.append(f"{method} {url} with {how} changed {changed}")
    assert not failures, "\n".join(failures)
    assert set(SAMPLE_FORMS) <= set(walked)  # the sample forms name real routes
    assert admin.get("/").status_code == 200  # still logged in: the logout was refused too


def test_support_changes_nothing_anywhere(app, support, world, tables):
    walked, failures = [], []
    for rule, method in state_changes(app):
        if rule.endpoint in ANY_ROLE:
            continue
        url = url_of(rule, world)
        form = sample_form(rule.endpoint, world)
        for htmx in (False, True):
            before = tables()
            response = support.post(url, form, htmx=htmx) if method == "POST" else None
            if response is None:  # PUT, PATCH, DELETE: the token in the header, as htmx
                headers = {"X-CSRFToken": support.csrf_token()}
                response = support.client.open(url, method=method, data=form, headers=headers)
            changed = changes(before, tables())
            walked.append(rule.endpoint)
            if rule.endpoint in READ_ONLY_POSTS:  # support may use it: it only reads
                if response.status_code != 200:
                    failures.append(f"{method} {url} (htmx={htmx}): {response.status_code}")
            elif response.status_code != 403 or SUPPORT_REFUSED not in text(response):
                failures.append(f"{method} {url} (htmx={htmx}): {response.status_code}")
            if changed:
                failures.append(f"{method} {url} (htmx={htmx}) changed {changed}")
    assert not failures, "\n".join(failures)
    assert set(SAMPLE_FORMS) - set(ANY_ROLE) <= set(walked)
    # the posts open to support are exactly the ones that change nothing by design
    assert set(READ_ONLY_POSTS) == base.READ_ONLY_POSTS


@pytest.mark.parametrize("role", ["admin", "support"])
def test_every_page_answers_each_role_as_the_role_rule_says(app, world, admin, support, role):
    console = admin if role == "admin" else support
    failures = []
    for rule in pages(app):
        url = url_of(rule, world)
        response = console.get(url)
        location = response.headers.get("Location", "")
        if role == "support" and rule.endpoint in ADMIN_ONLY:
            ok = response.status_code == 403
        elif response.status_code in (302, 303):  # /login, logged in: on to the console
            ok = not location.startswith("/login")
        else:
            ok = response.status_code == 200
        if not ok:
            failures.append(f"{role} GET {url}: {response.status_code} {location}")
    assert not failures, "\n".join(failures)
    assert ADMIN_ONLY  # the rule has something to check


@pytest.mark.parametrize("endpoint", sorted(SAMPLE_FORMS))
def test_each_sample_form_changes_something_when_allowed(app, admin, world, tables, endpoint):
    """The walks above would see a missing check: with the token, as an admin, each
    sample form does change the database (what it would do to a forged request)."""
    [(rule, method)] = [(r, m) for r, m in state_changes(app) if r.endpoint == endpoint]
    form = {**sample_form(endpoint, world), "csrf_token": admin.csrf_token()}
    before = tables()
    response = admin.client.open(url_of(rule, world), method=method, data=form)
    assert response.status_code < 400, text(response)[:500]
    assert bool(changes(before, tables())) is (endpoint not in READ_ONLY_POSTS)


# Routes a visitor who is not logged in may use, with the reason.
LOGGED_OUT_ALLOWED = {"auth.login": "the login form itself"}


def test_every_route_sends_a_logged_out_visitor_to_the_login(app, world, tables):
    visitor, failures = Console(app), []
    for rule in console_rules(app):
        if rule.endpoint in LOGGED_OUT_ALLOWED:
            continue
        url = url_of(rule, world)
        for method in sorted(rule.methods & {"GET", *CHANGING}):
            before = tables()
            form = {**sample_form(rule.endpoint, world), "csrf_token": visitor.csrf_token()}
            plain = visitor.client.open(url, method=method, data=form)
            htmx = visitor.client.open(url, method=method, headers={"HX-Request": "true"})
            if plain.status_code not in (302, 303) or not is_login(plain.location):
                failures.append(f"{method} {url}: {plain.status_code} {plain.location}")
            if htmx.status_code != 401 or not is_login(htmx.headers.get("HX-Redirect")):
                failures.append(f"{method} {url} over htmx: {htmx.status_code}")
            if changed := changes(before, tables()):
                failures.append(f"{method} {url} changed {changed}")
    assert not failures, "\n".join(failures)


def is_login(location: str | None) -> bool:
    """True for the login page (with or without ``next``)."""
    return bool(location) and location.split("?")[0] == "/login"


# Routes that read no field at all, so have no text to refuse, with the reason.
NO_FIELDS_READ = {"auth.logout": "logs out whatever the form holds; stores nothing of it"}


def test_every_route_refuses_nul_characters_and_changes_nothing(app, admin, world, tables):
    """PostgreSQL cannot store a NUL and no person types one: a 400 on every route."""
    failures = []
    for rule in console_rules(app):
        if rule.endpoint in NO_FIELDS_READ:
            continue
        url = url_of(rule, world)
        for method in sorted(rule.methods & {"GET", *CHANGING}):
            before = tables()
            if method == "GET":
                response = admin.get(f"{url}?q=a%00b")
            else:
                form = {**sample_form(rule.endpoint, world), "note": "a\x00b"}
                form["csrf_token"] = admin.csrf_token()
                response = admin.client.open(url, method=method, data=form)
            if response.status_code != 400 or "NUL" not in text(response):
                failures.append(f"{method} {url}: {response.status_code}")
            if method != "GET" and (changed := changes(before, tables())):
                failures.append(f"{method} {url} changed {changed}")
    assert not failures, "\n".join(failures)
