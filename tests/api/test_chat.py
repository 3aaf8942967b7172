"""The chat API over real HTTP, non-streaming: exact upstream bodies, identity rules,
stored rows. The fake upstream captures what Tally sent."""

import hashlib
import hmac
import itertools
import re
import time

import pytest
import requests

from tally.keys.api_keys import revoke_api_key
from tests.helpers.api import BASE, chat
from tests.helpers.payloads import completion
from tests.helpers.rows import configure, end_users, identifiers, only_refusal, request_rows
from tests.helpers.settings import HASH_KEY

PROFILE = {
    "id": "user_2N4Z",
    "display_name": "Jane Doe",
    "email": "jane@example.com",
    "metadata": [{"plan": "pro"}, {"region": "eu"}],
    "tags": ["authenticated", "plan-pro"],
    "logo_url": "https://example.com/jane.png",
}


def expected_identifier(mode: str, internal_id: str = "user_2N4Z", prefix: str = "tally") -> str:
    raw = internal_id.encode()
    core = {
        "none": internal_id,
        "sha256": hashlib.sha256(raw).hexdigest()[:16],
        "hmac-sha256": hmac.new(HASH_KEY.encode(), raw, hashlib.sha256).hexdigest()[:16],
    }[mode]
    return f"{prefix}_{core}" if prefix else core


@pytest.mark.parametrize(
    ("mode", "dialect", "enabled"),
    list(
        itertools.product(
            ["none", "sha256", "hmac-sha256"],
            ["openrouter", "openai", "orq", "compatible"],
            ["on", "off"],
        )
    ),
)
def test_upstream_receives_exactly_the_stamped_body(tally, upstream, mode, dialect, enabled):
    configure(
        tally.flask_app, hash_mode=mode, dialect=dialect, enabled=enabled, forward_profile="on"
    )
    response = chat(tally, identity=PROFILE, user="ignored-when-identity-is-sent", temperature=0.3)
    assert response.status_code == 200, response.text
    expected = {**BASE, "temperature": 0.3}
    if enabled == "on":
        identifier = expected_identifier(mode)
        if dialect == "orq":
            identity = {"id": identifier}
            if mode == "none":
                identity.update(
                    display_name="Jane Doe",
                    email="jane@example.com",
                    metadata=[{"plan": "pro"}, {"region": "eu"}],
                    tags=["authenticated", "plan-pro"],
                )
            expected["identity"] = identity
        elif dialect == "openai":
            expected["safety_identifier"] = identifier
        else:
            expected["user"] = identifier
    assert upstream.last.body == expected
    assert upstream.last.path == "/api/v1/chat/completions"
    assert upstream.last.headers["Authorization"] == "Bearer sk-up-secret"


def test_sha256_example_from_the_issue(tally, upstream):
    configure(tally.flask_app, hash_mode="sha256")
    chat(tally, user="user_2N4Z")
    assert upstream.last.body["user"] == "tally_" + hashlib.sha256(b"user_2N4Z").hexdigest()[:16]


def test_the_answer_is_the_upstreams_bytes(tally, upstream):
    upstream.reply(json=completion("Bonjour"), headers={"X-Generation-Id": "gen-fake-1"})
    response = chat(tally, user="u1")
    assert response.json() == completion("Bonjour")
    assert response.headers["Content-Type"] == "application/json"
    assert response.headers["X-Generation-Id"] == "gen-fake-1"


def test_a_non_streaming_call_writes_one_row(tally, upstream):
    configure(tally.flask_app, hash_mode="sha256")
    response = chat(tally, user="user_2N4Z")
    [row] = request_rows(tally.flask_app)
    assert row.request_id == response.headers["X-Request-Id"]
    assert (row.status, row.error_code, row.stream) == (200, None, False)
    assert (row.prompt_tokens, row.completion_tokens, row.total_tokens) == (12, 3, 15)
    assert row.cost == pytest.approx(0.00042)
    assert row.model == "openai/gpt-4o-mini"
    assert row.generation_id == "gen-fake-1"
    assert row.user.external_id == "user_2N4Z"
    assert row.identifier.identifier == expected_identifier("sha256")
    assert row.latency_ms > 0 and row.ttft_ms is None
    assert row.is_demo is False


@pytest.mark.parametrize(
    ("extra", "headers", "internal_id"),
    [
        (
            {"identity": {"id": "from-identity"}, "user": "from-user"},
            {"X-Tally-User": "from-header"},
            "from-identity",
        ),
        ({"user": "from-user"}, {"X-Tally-User": "from-header"}, "from-user"),
        ({}, {"X-Tally-User": "from-header"}, "from-header"),
    ],
)
def test_end_user_precedence(tally, upstream, extra, headers, internal_id):
    configure(tally.flask_app, hash_mode="none")
    chat(tally, headers=headers, **extra)
    assert upstream.last.body["user"] == f"tally_{internal_id}"
    assert [u.external_id for u in end_users(tally.flask_app)] == [internal_id]


def test_anonymous_requests_send_nothing_identifying(tally, upstream):
    response = chat(tally)
    assert response.status_code == 200
    assert upstream.last.body == BASE
    [row] = request_rows(tally.flask_app)
    assert row.user is None and row.identifier is None
    assert end_users(tally.flask_app) == []


def test_require_identity_refuses_anonymous_requests(tally, upstream):
    configure(tally.flask_app, require_identity="on")
    response = chat(tally)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "identity_required"
    assert response.json()["error"]["param"] == "user"
    assert upstream.requests == []
    assert only_refusal(tally.flask_app, response, 400, "identity_required").user_id is None


def test_a_key_bound_to_a_user_cannot_be_used_to_impersonate(tally, upstream, make_key):
    bound = make_key(user="svc_user")
    configure(tally.flask_app, hash_mode="none")
    chat(tally, key=bound, identity={"id": "someone-else", "email": "x@example.com"})
    assert upstream.last.body["user"] == "tally_svc_user"
    chat(tally, key=bound, headers={"X-Tally-User": "someone-else"})
    assert upstream.last.body["user"] == "tally_svc_user"
    rows = request_rows(tally.flask_app)
    assert [r.user.external_id for r in rows] == ["svc_user", "svc_user"]
    assert [u.external_id for u in end_users(tally.flask_app)] == ["svc_user"]


def test_the_profile_is_stored_and_updated_from_identity(tally):
    chat(tally, identity=PROFILE)
    chat(tally, identity={"id": "user_2N4Z", "display_name": "Jane D."})
    [user] = end_users(tally.flask_app)
    assert user.display_name == "Jane D."
    assert user.email == "jane@example.com"
    assert user.profile_metadata == [{"plan": "pro"}, {"region": "eu"}]
    assert user.tags == ["authenticated", "plan-pro"]
    assert user.logo_url == "https://example.com/jane.png"


def test_old_identifiers_keep_resolving_after_a_config_change(tally, runner_for):
    first_revision = configure(tally.flask_app, hash_mode="sha256", prefix="acme")
    chat(tally, user="user_2N4Z")
    second_revision = configure(tally.flask_app, hash_mode="hmac-sha256", prefix="tally")
    chat(tally, user="user_2N4Z")
    chat(tally, user="user_2N4Z")
    found = identifiers(tally.flask_app)
    assert [(i.identifier, i.revision_id, i.request_count) for i in found] == [
        (expected_identifier("sha256", prefix="acme"), first_revision, 1),
        (expected_identifier("hmac-sha256"), second_revision, 2),
    ]
    assert {i.user.external_id for i in found} == {"user_2N4Z"}
    result = runner_for(tally.flask_app).invoke(
        args=["trace", expected_identifier("sha256", prefix="acme")]
    )
    assert result.exit_code == 0
    assert "internal_id=user_2N4Z" in result.output
    assert f"config_revision={first_revision}" in result.output


@pytest.fixture
def runner_for():
    return lambda flask_app: flask_app.test_cli_runner()


def test_models_are_the_upstreams(tally, upstream):
    response = requests.get(
        f"{tally.url}/v1/models", headers={"Authorization": f"Bearer {tally.key}"}, timeout=5
    )
    assert response.status_code == 200
    assert response.json()["data"][0]["id"] == "openai/gpt-4o-mini"
    assert upstream.last.path == "/api/v1/models"


@pytest.mark.parametrize(
    ("headers", "message"),
    [
        ({}, "Missing API key"),
        ({"Authorization": "Bearer tly_not-a-real-key"}, "Incorrect or revoked API key."),
        ({"Authorization": "Basic dXNlcjpwYXNz"}, "Missing API key"),
    ],
)
def test_requests_without_a_valid_key_get_401(tally, upstream, headers, message):
    response = requests.post(
        f"{tally.url}/v1/chat/completions", json=BASE, headers=headers, timeout=5
    )
    assert response.status_code == 401
    error = response.json()["error"]
    assert message in error["message"]
    assert error["code"] == "invalid_api_key"
    assert upstream.requests == [] and request_rows(tally.flask_app) == []


def test_a_revoked_key_stops_working_at_once(tally, make_key):
    key = make_key(name="temp")
    assert chat(tally, key=key).status_code == 200
    with tally.flask_app.extensions["tally"].sessions() as session:
        revoke_api_key(session, "temp", "test")
    response = chat(tally, key=key)
    assert response.status_code == 401
    assert response.json()["error"]["message"] == "Incorrect or revoked API key."


def test_every_answer_carries_a_request_id(tally):
    ok = chat(tally)
    refused = chat(tally, key="tly_wrong")
    assert len(ok.headers["X-Request-Id"]) == 32
    assert len(refused.headers["X-Request-Id"]) == 32
    assert ok.headers["X-Request-Id"] != refused.headers["X-Request-Id"]


def test_request_ids_sort_in_the_order_of_the_calls(tally):
    """32 hex digits leading with the millisecond: the later call's id sorts later."""
    ids = []
    for _ in range(3):
        ids.append(chat(tally, user="u1").headers["X-Request-Id"])
        time.sleep(0.002)
    assert all(re.fullmatch(r"[0-9a-f]{32}", rid) for rid in ids)
    assert ids == sorted(ids) and len(set(ids)) == 3
    assert abs(int(ids[0][:12], 16) / 1000 - time.time()) < 60


def test_unknown_api_paths_answer_in_openai_shape(tally):
    response = requests.get(f"{tally.url}/v1/nope", timeout=5)
    assert response.status_code == 404
    assert set(response.json()["error"]) == {"message", "type", "param", "code"}
    wrong_method = requests.get(f"{tally.url}/v1/chat/completions", timeout=5)
    assert wrong_method.status_code == 405
    assert wrong_method.json()["error"]["type"] == "invalid_request_error"


def test_concurrent_first_requests_for_one_user_make_one_user(tally, upstream):
    from concurrent.futures import ThreadPoolExecutor

    configure(tally.flask_app, hash_mode="none")
    with ThreadPoolExecutor(max_workers=10) as pool:
        statuses = list(pool.map(lambda _: chat(tally, user="newcomer").status_code, range(30)))
    assert statuses == [200] * 30
    assert [u.external_id for u in end_users(tally.flask_app)] == ["newcomer"]
    [identifier] = identifiers(tally.flask_app)
    assert (identifier.identifier, identifier.request_count) == ("tally_newcomer", 30)
    assert len(request_rows(tally.flask_app)) == 30
