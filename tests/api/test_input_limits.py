"""The API's input limits (README, "The API's input limits"): the sizes of what Tally
keeps (the model, the end user's metadata), how deep a JSON body may nest, and numbers
JSON has no place for. Each refusal is a 400 naming the field and the limit, reaches no
upstream and keeps nothing; each limit itself is accepted."""

from __future__ import annotations

import json

import pytest
import requests

from blueprints.api.base import MAX_JSON_DEPTH
from tally.end_users.claims import (
    MAX_METADATA_KEY_LENGTH,
    MAX_METADATA_LENGTH,
    MAX_METADATA_VALUE_LENGTH,
)
from tally.keys.admin_tokens import create_admin_token
from tally.proxy.endpoints.base import MAX_MODEL_LENGTH
from tests.api.routes import ANY_ENDPOINT_BODY, api_routes
from tests.helpers.api import chat, embed, respond
from tests.helpers.rows import end_users, request_rows, served_rows

ENDPOINTS = {"chat": chat, "responses": respond, "embeddings": embed}


def error_of(response, param: str | None) -> dict:
    """The 400's error in OpenAI's shape, naming ``param``."""
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "code", "param"}
    assert (error["type"], error["param"]) == ("invalid_request_error", param)
    return error


def metadata_of(size: int) -> list[dict]:
    """Metadata whose JSON text (compact) is exactly ``size`` characters: 20 keys."""
    keys = [f"k{i:02d}" for i in range(20)]
    skeleton = len(json.dumps([dict.fromkeys(keys, "")], separators=(",", ":")))
    spread, extra = divmod(size - skeleton, 20)
    values = {k: "v" * (spread + (1 if i < extra else 0)) for i, k in enumerate(keys)}
    metadata = [values]
    assert len(json.dumps(metadata, separators=(",", ":"))) == size
    return metadata


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_the_model_name_is_capped(tally, upstream, endpoint):
    send = ENDPOINTS[endpoint]
    assert send(tally, model="m" * MAX_MODEL_LENGTH, user="ada").status_code == 200
    error = error_of(send(tally, model="m" * (MAX_MODEL_LENGTH + 1), user="ada"), "model")
    assert error["message"] == "model must be at most 255 characters, got 256."
    [received] = upstream.requests
    assert received.body["model"] == "m" * MAX_MODEL_LENGTH
    [row] = served_rows(tally.flask_app)
    assert row.status == 200


# metadata that goes one over a cap -> the refusal's message
OVER = {
    "a value": (
        [{"plan": "v" * (MAX_METADATA_VALUE_LENGTH + 1)}],
        "identity.metadata['plan'] must be at most 1000 characters, got 1001",
    ),
    "a nested value, as JSON": (
        [{"plan": ["v" * 997]}],  # ["vvv…"]: 997 + 2 quotes + 2 brackets
        "identity.metadata['plan'] must be at most 1000 characters, got 1001",
    ),
    "a key": (
        [{"k" * (MAX_METADATA_KEY_LENGTH + 1): "pro"}],
        "each key of identity.metadata must be at most 100 characters, got 101",
    ),
    "the whole": (
        metadata_of(MAX_METADATA_LENGTH + 1),
        "identity.metadata must be at most 8000 characters as JSON, got 8001",
    ),
}
# metadata exactly at each cap
AT = {
    "a value": [{"plan": "v" * MAX_METADATA_VALUE_LENGTH}],
    "a nested value, as JSON": [{"plan": ["v" * 996]}],
    "a key": [{"k" * MAX_METADATA_KEY_LENGTH: "pro"}],
    "the whole": metadata_of(MAX_METADATA_LENGTH),
}


@pytest.mark.parametrize("cap", OVER)
def test_metadata_over_a_cap_is_a_400_naming_it(tally, upstream, cap):
    metadata, message = OVER[cap]
    error = error_of(chat(tally, identity={"id": "ada", "metadata": metadata}), "identity.metadata")
    assert (error["message"], error["code"]) == (message, "invalid_identity")
    assert upstream.requests == [] and end_users(tally.flask_app) == []


@pytest.mark.parametrize("cap", AT)
def test_metadata_at_a_cap_is_kept(tally, upstream, cap):
    answer = chat(tally, identity={"id": "ada", "metadata": AT[cap]})
    assert answer.status_code == 200, answer.text
    [user] = end_users(tally.flask_app)
    assert user.profile_metadata == AT[cap]


def nested(depth: int) -> dict:
    """A chat body whose deepest array is at ``depth`` levels (the body is level 1)."""
    value: list = []
    for _ in range(depth - 2):
        value = [value]
    return {**ANY_ENDPOINT_BODY, "extra": value}


def test_a_body_nested_to_the_limit_is_served(tally, upstream):
    body = nested(MAX_JSON_DEPTH)
    assert chat(tally, body).status_code == 200
    assert upstream.last.body["extra"] == body["extra"]


def test_a_shallow_body_with_many_brackets_is_served(tally, upstream):
    """More brackets than the depth limit, each at level 3 or 4: walked, and fine."""
    messages = [{"role": "user", "content": [{"type": "text", "text": "hi"}]}] * 200
    assert chat(tally, {**ANY_ENDPOINT_BODY, "messages": messages}).status_code == 200
    assert len(upstream.last.body["messages"]) == 200


DEEP = {
    "one level too deep": json.dumps(nested(MAX_JSON_DEPTH + 1)).encode(),
    "deeper than json can recurse": b"[" * 50_000,  # RecursionError in json.loads
    "deep inside an object": b'{"model": "m", "x": ' + b'{"a": ' * 5_000 + b"1" + b"}" * 5_001,
}
TOO_DEEP = "The JSON body of your request nests arrays and objects more than 128 levels deep."
NOT_JSON = {
    "NaN": b'{"model": "m", "temperature": NaN}',
    "Infinity": b'{"model": "m", "temperature": -Infinity}',
    "a float past the largest": b'{"model": "m", "temperature": 1e999}',
}


def post(server, path: str, raw: bytes, token: str) -> requests.Response:
    """POST ``raw`` as a JSON body."""
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    return requests.post(server.url + path, data=raw, headers=headers, timeout=10)


def test_every_v1_post_refuses_deep_json_and_non_numbers(tally, upstream):
    failures = []
    posts = [rule.rule for rule, method in api_routes(tally.flask_app, "/v1/") if method == "POST"]
    assert posts
    for path in posts:
        for name, raw in DEEP.items():
            response = post(tally, path, raw, tally.key)
            if response.status_code != 400:
                failures.append(f"{path} {name}: {response.status_code} {response.text[:80]}")
                continue
            message = error_of(response, None)["message"]
            if message != TOO_DEEP:
                failures.append(f"{path} {name}: {message}")
        for name, raw in NOT_JSON.items():
            response = post(tally, path, raw, tally.key)
            if response.status_code != 400 or "could not parse" not in response.text:
                failures.append(f"{path} {name}: {response.status_code} {response.text[:80]}")
    assert not failures, "\n".join(failures)
    assert upstream.requests == []
    assert {r.refused for r in request_rows(tally.flask_app)} == {True}  # refusals alone


def test_no_admin_api_route_fails_on_deep_json(tally):
    """The admin API takes no body today; a route that one day parses one must use the
    same parser (blueprints/api/base.read_json)."""
    with tally.flask_app.extensions["tally"].sessions() as session:
        _, secret = create_admin_token(session, "bi", "test")
    routes = api_routes(tally.flask_app, "/admin/api/")
    assert routes
    for rule, method in routes:
        headers = {"Authorization": f"Bearer {secret}", "Content-Type": "application/json"}
        for raw in (*DEEP.values(), *NOT_JSON.values()):
            response = requests.request(
                method, tally.url + rule.rule, data=raw, headers=headers, timeout=10
            )
            assert response.status_code < 500, (rule.rule, method, response.text[:200])
