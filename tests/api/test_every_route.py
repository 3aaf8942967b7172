"""Every route of the JSON API, taken from the lean app's URL map (tests/api/routes.py),
over real HTTP: without a key, with a malformed, unknown or revoked one, each ``/v1/``
route is a 401 in OpenAI's error shape (``invalid_api_key``) that reaches no upstream and
changes nothing; the admin API likewise refuses anything but a live admin token."""

from __future__ import annotations

import pytest
import requests

from tally.keys.admin_tokens import create_admin_token, get_admin_token, revoke_admin_token
from tests.api.routes import ANY_ENDPOINT_BODY, api_routes
from tests.helpers.snapshot import changes, reflect, snapshot


@pytest.fixture
def tables(tally):
    """Take a snapshot of every table (reflected once)."""
    engine = tally.flask_app.extensions["tally"].engine
    metadata = reflect(engine)
    return lambda: snapshot(engine, metadata)


def call(
    server, rule, method: str, authorization: str | None, body=ANY_ENDPOINT_BODY, **headers
) -> requests.Response:
    """One request to ``rule`` (by default a body every endpoint takes, when a POST)."""
    if authorization is not None:
        headers["Authorization"] = authorization
    body = body if method == "POST" else None
    url = server.url + rule.rule
    return requests.request(method, url, json=body, headers=headers, timeout=10)


def refusal_problem(response: requests.Response, code: str = "invalid_api_key") -> str | None:
    """What is wrong with ``response`` as a 401 in OpenAI's shape (None: nothing)."""
    if response.status_code != 401:
        return f"status {response.status_code}"
    if not is_openai_error(response):
        return f"body {response.text[:200]}"
    error = response.json()["error"]
    if (error["type"], error["code"]) != ("invalid_request_error", code) or not error["message"]:
        return f"error {error}"
    if not response.headers.get("WWW-Authenticate", "").startswith("Bearer"):
        return "no WWW-Authenticate"
    return None


def is_openai_error(response: requests.Response) -> bool:
    """True for a JSON body in OpenAI's error shape."""
    if not response.headers.get("Content-Type", "").startswith("application/json"):
        return False
    error = response.json().get("error")
    return isinstance(error, dict) and set(error) == {"message", "type", "code", "param"}


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


LIMIT_HEADERS = ("X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset")


def test_every_v1_answer_carries_its_request_id_and_the_users_limit_headers(tally, upstream):
    """Served or refused for its body, an answer names its request and the end user's
    quota (PRODUCT.md: every answer of the API carries X-RateLimit-*)."""
    failures = []
    user = {"X-Tally-User": "header-user"}
    for rule, method in api_routes(tally.flask_app, "/v1/"):
        served = call(tally, rule, method, f"Bearer {tally.key}", **user)
        answers = {"served": served}
        if method == "POST":  # a body no endpoint takes: refused before admission
            answers["refused"] = call(tally, rule, method, f"Bearer {tally.key}", {}, **user)
        answers["unauthenticated"] = call(tally, rule, method, None)
        for how, response in answers.items():
            wanted = ("X-Request-Id", *(() if how == "unauthenticated" else LIMIT_HEADERS))
            missing = [name for name in wanted if not response.headers.get(name)]
            if missing:
                failures.append(f"{method} {rule.rule} {how} ({response.status_code}): {missing}")
        if method == "POST" and answers["refused"].status_code != 400:
            failures.append(f"{method} {rule.rule} took an empty body")
    assert not failures, "\n".join(failures)


def test_every_v1_post_refuses_bad_json_and_a_body_too_large(tally, upstream):
    failures = []
    key = {"Authorization": f"Bearer {tally.key}", "Content-Type": "application/json"}
    too_large = b'{"input": "' + b"x" * 70_000 + b'"}'  # the fixture allows 65,536 bytes
    for rule, method in api_routes(tally.flask_app, "/v1/"):
        if method != "POST":
            continue
        for body, status in ((b'{"model": ', 400), (too_large, 413)):
            response = requests.post(tally.url + rule.rule, data=body, headers=key, timeout=10)
            if response.status_code != status or not is_openai_error(response):
                failures.append(f"POST {rule.rule}: {response.status_code} {response.text[:80]}")
    assert not failures, "\n".join(failures)
    assert upstream.requests == []
