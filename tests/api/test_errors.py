"""Bad input and upstream failures: OpenAI's error shape, the right status, and nothing
written that should not be: a refusal leaves its request row (refused, no tokens, no
cost) and nothing else."""

import pytest
import requests

from tests.helpers.api import BASE, chat, embed, respond
from tests.helpers.loopback import free_port
from tests.helpers.payloads import (
    Pause,
    chunks,
    completion,
    embedding_answer,
    response_object,
)
from tests.helpers.rows import configure, end_users, identifiers, only_refusal, request_rows
from tests.helpers.upstream import MODELS

LONG = "x" * 256


def error_of(response) -> dict:
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"message", "type", "param", "code"}
    return body["error"]


@pytest.mark.parametrize(
    ("body", "param", "message"),
    [
        (b"{not json", None, "We could not parse the JSON body of your request."),
        (b"[1, 2]", None, "The request body must be a JSON object."),
        ({"messages": BASE["messages"]}, "model", "model is required"),
        ({**BASE, "model": 5}, "model", "model is required and must be a non-empty string"),
        ({"model": "m"}, "messages", "messages is required and must be a non-empty array"),
        ({**BASE, "messages": ["hi"]}, "messages[0]", "messages[0] must be an object"),
        ({**BASE, "stream": "yes"}, "stream", "stream must be a boolean"),
        ({**BASE, "stream_options": "x"}, "stream_options", "stream_options must be an object"),
        ({**BASE, "user": 42}, "user", "user must be a string of 1 to 255 characters"),
        ({**BASE, "user": ""}, "user", "user must be 1 to 255 characters long, got 0"),
        ({**BASE, "user": LONG}, "user", "user must be 1 to 255 characters long, got 256"),
        ({**BASE, "identity": "u1"}, "identity", "identity must be an object"),
        ({**BASE, "identity": {}}, "identity.id", "identity.id must be a string"),
        ({**BASE, "identity": {"id": LONG}}, "identity.id", "1 to 255 characters long"),
        (
            {**BASE, "identity": {"id": "u", "email": "nope"}},
            "identity.email",
            "identity.email must be a valid e-mail address",
        ),
        (
            {**BASE, "identity": {"id": "u", "display_name": 7}},
            "identity.display_name",
            "identity.display_name must be a string",
        ),
        (
            {**BASE, "identity": {"id": "u", "tags": [f"t{i}" for i in range(11)]}},
            "identity.tags",
            "identity.tags may hold at most 10 tags, got 11",
        ),
        (
            {**BASE, "identity": {"id": "u", "tags": ["ok", 3]}},
            "identity.tags",
            "identity.tags must be a list of strings",
        ),
        (
            {**BASE, "identity": {"id": "u", "metadata": {"plan": "pro"}}},
            "identity.metadata",
            "identity.metadata must be a list of objects",
        ),
        (
            {
                **BASE,
                "identity": {
                    "id": "u",
                    "metadata": [{f"k{i}": i for i in range(12)}, {f"j{i}": i for i in range(9)}],
                },
            },
            "identity.metadata",
            "at most 20 keys in all, got 21",
        ),
    ],
)
def test_bad_input_is_a_400_naming_the_field_and_writes_its_refusal_alone(
    tally, upstream, body, param, message
):
    response = chat(tally, body, headers={"Content-Type": "application/json"})
    assert response.status_code == 400
    error = error_of(response)
    assert message in error["message"]
    assert error["param"] == param
    assert error["type"] == "invalid_request_error"
    assert upstream.requests == []
    row = only_refusal(tally.flask_app, response, 400, error["code"] or "invalid_request_error")
    assert row.user_id is None
    assert end_users(tally.flask_app) == [] and identifiers(tally.flask_app) == []


def test_metadata_with_exactly_20_keys_is_accepted(tally, upstream):
    metadata = [{f"k{i}": i for i in range(10)}, {f"j{i}": i for i in range(10)}]
    response = chat(tally, identity={"id": "u", "metadata": metadata, "tags": ["a"] * 10})
    assert response.status_code == 200


def test_an_identifier_over_255_characters_is_refused(tally, upstream):
    configure(tally.flask_app, hash_mode="none", prefix="p" * 64)
    response = chat(tally, user="u" * 200)
    assert response.status_code == 400
    error = error_of(response)
    assert error["param"] == "user" and error["code"] == "identifier_too_long"
    assert "265 characters; the limit is 255" in error["message"]
    assert upstream.requests == [] and identifiers(tally.flask_app) == []


def test_an_oversized_body_is_a_413(tally, upstream):
    big = {**BASE, "messages": [{"role": "user", "content": "x" * 70_000}]}
    response = chat(tally, big)
    assert response.status_code == 413
    error = error_of(response)
    assert error["message"] == "The request body is larger than 65536 bytes."
    assert upstream.requests == []
    assert only_refusal(tally.flask_app, response, 413, "request_too_large").model is None


@pytest.mark.parametrize(
    ("status", "payload", "message", "code"),
    [
        (
            402,
            {"error": {"message": "Insufficient credits", "code": 402}},
            "Insufficient credits",
            "402",
        ),
        (
            400,
            {
                "error": {
                    "message": "model not found",
                    "type": "invalid_request_error",
                    "code": "model_not_found",
                    "param": "model",
                }
            },
            "model not found",
            "model_not_found",
        ),
        (
            429,
            {"error": {"message": "Rate limit exceeded: slow down"}},
            "Rate limit exceeded: slow down",
            "upstream_429",
        ),
        (
            503,
            "<html>Service Unavailable</html>",
            "The upstream answered with status 503.",
            "upstream_503",
        ),
    ],
)
def test_upstream_errors_keep_their_status_and_message(
    tally, upstream, status, payload, message, code
):
    if isinstance(payload, str):
        upstream.reply(status=status, raw=payload.encode())
    else:
        upstream.reply(status=status, json=payload)
    response = chat(tally, user="u1")
    assert response.status_code == status
    error = error_of(response)
    assert error["message"] == message
    assert error["code"] == code
    [row] = request_rows(tally.flask_app)
    assert (row.status, row.error_code, row.error_message) == (status, code, message)
    assert row.user.external_id == "u1"


def test_the_upstream_key_never_appears_in_an_error(tally, upstream):
    upstream.reply(status=401, json={"error": {"message": "Bad key sk-up-secret"}})
    response = chat(tally)
    assert "sk-up-secret" not in response.text
    assert error_of(response)["message"] == "Bad key [redacted]"


def test_an_error_inside_a_200_body_is_an_error(tally, upstream):
    upstream.reply(json={"error": {"message": "Provider returned error", "code": 502}})
    response = chat(tally)
    assert response.status_code == 502
    assert error_of(response)["message"] == "Provider returned error"


def test_a_malformed_upstream_answer_is_a_502(tally, upstream):
    upstream.reply(raw=b"this is not json", headers={"Content-Type": "application/json"})
    response = chat(tally, user="u1")
    assert response.status_code == 502
    assert error_of(response)["code"] == "upstream_malformed"
    [row] = request_rows(tally.flask_app)
    assert (row.status, row.error_code) == (502, "upstream_malformed")


REDIRECTED = {
    "chat": (lambda server: chat(server, user="u1"), {"json": completion()}),
    "chat-stream": (
        lambda server: chat(server, user="u1", stream=True),
        {"events": chunks(["Hello", "!"])},
    ),
    "responses": (lambda server: respond(server, user="u1"), {"json": response_object()}),
    "embeddings": (lambda server: embed(server, user="u1"), {"json": embedding_answer(2)}),
}


@pytest.mark.parametrize("status", [301, 302, 307])
@pytest.mark.parametrize("endpoint", list(REDIRECTED))
def test_an_upstream_redirect_is_a_502_never_followed(tally, upstream, endpoint, status):
    send, body = REDIRECTED[endpoint]
    location = "/api/v1/moved/sk-up-secret/here?key=sk-up-secret#sk-up-secret"
    upstream.reply(status=status, headers={"Location": location}, **body)
    response = send(tally)
    assert response.status_code == 502, response.text
    assert response.headers["Content-Type"] == "application/json"
    message = (
        f"The upstream answered a redirect ({status}) to {upstream.server.url}"
        "/api/v1/moved/[redacted]/here; Tally does not follow redirects: check "
        "TALLY_UPSTREAM_URL."
    )
    assert error_of(response) == {
        "message": message,
        "type": "upstream_error",
        "param": None,
        "code": "upstream_malformed",
    }
    assert "sk-up-secret" not in response.text
    assert len(upstream.requests) == 1  # not followed
    [row] = request_rows(tally.flask_app)
    assert (row.status, row.error_code, row.error_message) == (502, "upstream_malformed", message)
    assert row.user.external_id == "u1" and row.prompt_tokens in (0, None)


@pytest.mark.parametrize("status", [301, 302, 307])
def test_a_redirected_model_list_is_a_502(tally, upstream, status):
    upstream.reply_models(
        status=status, json=MODELS, headers={"Location": "https://login.example.test/sso?k=1"}
    )
    response = requests.get(
        f"{tally.url}/v1/models", headers={"Authorization": f"Bearer {tally.key}"}, timeout=10
    )
    assert response.status_code == 502, response.text
    error = error_of(response)
    assert error["code"] == "upstream_malformed"
    assert error["message"] == (
        f"The upstream answered a redirect ({status}) to https://login.example.test/sso; "
        "Tally does not follow redirects: check TALLY_UPSTREAM_URL."
    )


def test_a_redirect_without_location_is_a_502(tally, upstream):
    upstream.reply(status=302, raw=b"")
    response = chat(tally, user="u1")
    assert response.status_code == 502
    assert error_of(response)["message"] == (
        "The upstream answered a redirect (302) with no Location; Tally does not follow "
        "redirects: check TALLY_UPSTREAM_URL."
    )


def test_an_unreachable_upstream_is_a_502(make_app, serve, make_key):
    server = serve(make_app(TALLY_UPSTREAM_URL=f"http://127.0.0.1:{free_port()}/v1"))
    server.key = make_key()
    response = chat(server, user="u1")
    assert response.status_code == 502
    error = error_of(response)
    assert error["code"] == "upstream_unreachable"
    assert error["message"].startswith("The upstream could not be reached")
    [row] = request_rows(server.app)
    assert (row.status, row.error_code) == (502, "upstream_unreachable")


def test_a_silent_upstream_is_a_504(make_app, serve, make_key, upstream):
    server = serve(make_app(TALLY_UPSTREAM_URL=upstream.url, TALLY_UPSTREAM_TIMEOUT="0.3"))
    server.key = make_key()
    upstream.reply(json=completion(), hang=1.0)
    response = chat(server, user="u1")
    assert response.status_code == 504
    assert error_of(response)["code"] == "upstream_timeout"
    [row] = request_rows(server.app)
    assert (row.status, row.error_code) == (504, "upstream_timeout")


def test_a_stream_that_stalls_mid_way_ends_with_a_timeout_event(
    make_app, serve, make_key, upstream
):
    server = serve(make_app(TALLY_UPSTREAM_URL=upstream.url, TALLY_UPSTREAM_TIMEOUT="0.3"))
    server.key = make_key()
    upstream.reply(
        events=[
            {"choices": [{"index": 0, "delta": {"content": "a"}}]},
            b": keep\n\n",
            Pause(1.0),
            b": late\n\n",
        ]
    )
    response = chat(server, stream=True, user="u1")
    text = response.text
    assert text.endswith('"code": "upstream_timeout"}}\n\n')
    [row] = request_rows(server.app)
    assert (row.status, row.error_code) == (504, "upstream_timeout")


def test_no_500_and_no_stack_trace_for_client_input(tally):
    for raw in (b"\xff\xfe", b"null", b'{"model": null}', b"1e999999"):
        response = requests.post(
            f"{tally.url}/v1/chat/completions",
            data=raw,
            timeout=5,
            headers={"Authorization": f"Bearer {tally.key}"},
        )
        assert response.status_code == 400, raw
        assert "Traceback" not in response.text
