"""Every route of the JSON API, taken from the lean app's URL map (tests/api/routes.py),
over real HTTP: without a key, with a malformed, unknown or revoked one, each ``/v1/``
route is a 401 in OpenAI's error shape (``invalid_api_key``) that reaches no upstream and
changes nothing; the admin API likewise refuses anything but a live admin token."""

from __future__ import annotations

import pytest
import requests

from tally.keys.admin_tokens import create_admin_token, get_admin_token, revoke_admin_token
from tests.api.routes import ANY_ENDPOINT_BODY, api_routes
from tests.snapshot import changes, reflect, snapshot


@pytest.fixture
def tables(tally):
    """Take a snapshot of every table (reflected once)."""
    engine = tally.flask_app.extensions["tally"].engine
    metadata = reflect(engine)
    return lambda: snapshot(engine, metadata)


def call(server, rule, method: str, authorization: str | None) -> requests.Response:
    """One request to ``rule`` (a body every endpoint takes when it is a POST)."""
    headers = {} if authorization is None else {"Authorization": authorization}
    body = ANY_ENDPOINT_BODY if method == "POST" else None
    url = server.url + rule.rule
    return requests.request(method, url, json=body, headers=headers, timeout=10)


def refusal_problem(response: requests.Response, code: str = "invalid_api_key") -> str | None:
    """What is wrong with ``response`` as a 401 in OpenAI's shape (None: nothing)."""
    if response.status_code != 401:
        return f"status {response.status_code}"
    if not response.headers.get("Content-Type", "").startswith("application/json"):
        return f"content type {response.headers.get('Content-Type')}"
    error = response.json().get("error")
    if not isinstance(error, dict) or set(error) != {"message", "type", "code", "param"}:
        return f"body {response.text[:200]}"
    if (error["type"], error["code"]) != ("invalid_request_error", code) or not error["message"]:
        return f"error {error}"
    if not response.headers.get("WWW-Authenticate", "").startswith("Bearer"):
        return "no WWW-Authenticate"
    return None


def walk(server, upstream, tables, prefix: str, attempts: dict[str, str | None]) -> list[str]:
    """Every route under ``prefix`` with each of ``attempts``; what went wrong."""
    failures = []
    routes = api_routes(server.flask_app, prefix)
    assert routes, f"no route under {prefix}"
    for rule, method in routes:
        for how, authorization in attempts.items():
            before, sent = tables(), len(upstream.requests)
            problem = refusal_problem(call(server, rule, method, authorization))
            if problem:
                failures.append(f"{method} {rule.rule} with {how}: {problem}")
            if len(upstream.requests) != sent:
                failures.append(f"{method} {rule.rule} with {how} reached the upstream")
            if changed := changes(before, tables()):
                failures.append(f"{method} {rule.rule} with {how} changed {changed}")
    return failures


BAD_KEYS = {
    "no Authorization header": None,
    "an empty bearer": "Bearer ",
    "another scheme": "Basic dXNlcjpwYXNz",
    "an unknown key": "Bearer tly_not-a-key-of-this-gateway",
}


def test_every_v1_route_refuses_a_missing_or_unknown_key(tally, upstream, tables):
    failures = walk(tally, upstream, tables, "/v1/", BAD_KEYS)
    assert not failures, "\n".join(failures)


def test_every_v1_route_refuses_a_revoked_key_at_once(tally, upstream, tables):
    for rule, method in api_routes(tally.flask_app, "/v1/"):  # the key works, and is cached
        sent = len(upstream.requests)
        assert call(tally, rule, method, f"Bearer {tally.key}").status_code != 401, rule.rule
        assert len(upstream.requests) == sent + 1, rule.rule  # a missing check would show
    result = tally.flask_app.test_cli_runner().invoke(args=["keys", "revoke", "web"])
    assert result.exit_code == 0, result.output
    failures = walk(tally, upstream, tables, "/v1/", {"the revoked key": f"Bearer {tally.key}"})
    assert not failures, "\n".join(failures)


def test_every_admin_api_route_needs_a_live_admin_token(tally, upstream, tables):
    with tally.flask_app.extensions["tally"].sessions() as session:
        token, secret = create_admin_token(session, "bi", "test")
    for rule, method in api_routes(tally.flask_app, "/admin/api/"):
        assert call(tally, rule, method, f"Bearer {secret}").status_code != 401, rule.rule
    with tally.flask_app.extensions["tally"].sessions() as session:
        revoke_admin_token(session, get_admin_token(session, token.id), "test")
    attempts = {**BAD_KEYS, "a gateway API key": f"Bearer {tally.key}"}
    attempts["the revoked admin token"] = f"Bearer {secret}"
    failures = walk(tally, upstream, tables, "/admin/api/", attempts)
    assert not failures, "\n".join(failures)
