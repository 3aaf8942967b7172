"""POST /v1/responses over real HTTP: the exact upstream body in every dialect, typed
events relayed one by one, usage from response.completed, and rows for cut and failed
streams."""

import json
import threading

import pytest

from tests.helpers.api import RESPONSES_BODY, body_of, respond
from tests.helpers.payloads import RESPONSE_USAGE, response_events, response_object, typed
from tests.helpers.rows import configure, only_refusal, request_rows
from tests.helpers.waiting import wait_for


@pytest.mark.parametrize(
    ("dialect", "cache_key", "stamped"),
    [
        ("openrouter", "off", {"user": "tally_user_2N4Z"}),
        ("openai", "off", {"safety_identifier": "tally_user_2N4Z"}),
        (
            "openai",
            "on",
            {"safety_identifier": "tally_user_2N4Z", "prompt_cache_key": "tally_user_2N4Z"},
        ),
        ("compatible", "off", {"user": "tally_user_2N4Z"}),
        (
            "orq",
            "on",
            {"identity": {"id": "tally_user_2N4Z"}, "prompt_cache_key": "tally_user_2N4Z"},
        ),
    ],
)
def test_upstream_receives_exactly_the_stamped_body(tally, upstream, dialect, cache_key, stamped):
    configure(tally.flask_app, hash_mode="none", dialect=dialect, cache_key=cache_key)
    upstream.reply(json=response_object())
    response = respond(
        tally,
        user="user_2N4Z",
        safety_identifier="client-safety",
        prompt_cache_key="client-bucket",
        instructions="Be brief.",
    )
    assert response.status_code == 200, response.text
    assert upstream.last.path == "/api/v1/responses"
    assert upstream.last.body == {**RESPONSES_BODY, "instructions": "Be brief.", **stamped}


def test_safety_identifier_names_the_end_user_when_user_is_absent(tally, upstream):
    configure(tally.flask_app, hash_mode="none", dialect="openai")
    upstream.reply(json=response_object())
    respond(tally, safety_identifier="user_77", headers={"X-Tally-User": "header-user"})
    assert upstream.last.body["safety_identifier"] == "tally_user_77"
    [row] = request_rows(tally.flask_app)
    assert row.user.external_id == "user_77"


def test_a_whole_response_is_relayed_and_recorded(tally, upstream):
    configure(tally.flask_app, hash_mode="none")
    upstream.reply(json=response_object("Bonjour"))
    response = respond(tally, user="u1")
    assert response.json() == response_object("Bonjour")
    [row] = request_rows(tally.flask_app)
    assert row.request_id == response.headers["X-Request-Id"]
    assert (row.endpoint, row.status, row.stream, row.error_code) == ("responses", 200, False, None)
    assert (row.prompt_tokens, row.completion_tokens, row.total_tokens) == (11, 2, 13)
    assert row.cached_tokens == 4
    assert row.cost == pytest.approx(0.00031)
    assert (row.model, row.generation_id) == ("openai/gpt-4o-mini", "resp_fake_1")
    assert row.identifier.identifier == "tally_u1"


def test_a_stream_is_relayed_byte_for_byte_and_recorded_from_response_completed(tally, upstream):
    events = [b": OPENROUTER PROCESSING\n\n", *response_events(["Hel", "lo"])]
    upstream.reply(events=events, done=False)
    response = respond(tally, stream=True, user="u1")
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/event-stream")
    assert body_of(response) == b"".join(events)
    assert upstream.last.body == {
        **RESPONSES_BODY,
        "stream": True,
        "user": upstream.last.body["user"],
    }
    [row] = wait_for(lambda: request_rows(tally.flask_app))
    assert (row.endpoint, row.status, row.stream, row.error_code) == ("responses", 200, True, None)
    assert (row.prompt_tokens, row.completion_tokens, row.cached_tokens) == (11, 2, 4)
    assert row.generation_id == "resp_fake_1"
    assert 0 < row.ttft_ms <= row.latency_ms


def test_each_event_reaches_the_client_before_the_upstream_sends_the_next(tally, upstream):
    gate = threading.Event()
    events = response_events(["first", "second"])
    upstream.reply(events=[*events[:4], gate, *events[4:]], done=False)
    response = respond(tally, stream=True, user="u1")
    received = b""
    stream = response.iter_content(chunk_size=None)
    while b'"first"' not in received:  # the upstream is blocked on the gate here
        received += next(stream)
    gate.set()
    received += b"".join(stream)
    assert received == b"".join(events)


def test_a_cut_stream_ends_with_an_error_event_and_is_recorded_as_cut(tally, upstream):
    events = response_events(["partial"], final="")
    upstream.reply(events=events, done=False)
    response = respond(tally, stream=True, user="u1")
    received = body_of(response)
    assert received.startswith(b"".join(events))
    tail = received[len(b"".join(events)) :]
    assert tail.startswith(b"event: error\ndata: ")
    error = json.loads(tail.split(b"data: ", 1)[1])
    message = "The upstream ended the stream before response.completed."
    assert error["type"] == "error"
    assert (error["code"], error["message"], error["sequence_number"]) == (
        "stream_incomplete",
        message,
        len(events),
    )
    assert error["error"] == {
        "type": "upstream_error",
        "code": "stream_incomplete",
        "message": message,
        "param": None,
    }
    [row] = wait_for(lambda: request_rows(tally.flask_app))
    assert (row.status, row.error_code, row.error_message) == (502, "stream_incomplete", message)


def test_a_broken_connection_mid_stream_is_recorded(tally, upstream):
    upstream.reply(events=response_events(["partial"], final=""), done=False, cut=True)
    response = respond(tally, stream=True, user="u1")
    assert b"event: error" in body_of(response)
    [row] = wait_for(lambda: request_rows(tally.flask_app))
    assert row.status == 502
    assert row.error_code in ("upstream_disconnected", "stream_incomplete")


def test_response_failed_is_relayed_and_recorded_as_an_error_with_its_message(tally, upstream):
    error = {"code": "server_error", "message": "The model crashed."}
    events = response_events(["par"], final="failed", error=error, usage=None)
    upstream.reply(events=events, done=False)
    response = respond(tally, stream=True, user="u1")
    assert body_of(response) == b"".join(events)  # a proper end: nothing added
    [row] = wait_for(lambda: request_rows(tally.flask_app))
    assert (row.status, row.error_code, row.error_message) == (
        502,
        "server_error",
        error["message"],
    )


def test_an_error_event_from_the_upstream_is_recorded(tally, upstream):
    events = [
        *response_events([], final="")[:1],
        typed("error", sequence_number=1, code="rate_limit_exceeded", message="Slow down."),
    ]
    upstream.reply(events=events, done=False)
    response = respond(tally, stream=True, user="u1")
    assert body_of(response) == b"".join(events)
    [row] = wait_for(lambda: request_rows(tally.flask_app))
    assert (row.status, row.error_code, row.error_message) == (
        502,
        "rate_limit_exceeded",
        "Slow down.",
    )


def test_response_incomplete_is_a_proper_end_with_usage(tally, upstream):
    events = response_events(["a"], final="incomplete", incomplete_details={"reason": "max"})
    upstream.reply(events=events, done=False)
    assert body_of(respond(tally, stream=True, user="u1")) == b"".join(events)
    [row] = wait_for(lambda: request_rows(tally.flask_app))
    assert (row.status, row.error_code, row.total_tokens) == (
        200,
        None,
        RESPONSE_USAGE["total_tokens"],
    )


def test_an_upstream_error_status_keeps_its_status_and_message(tally, upstream):
    upstream.reply(
        status=400,
        json={
            "error": {
                "message": "Unknown parameter: 'foo'.",
                "type": "invalid_request_error",
                "code": "unknown_parameter",
                "param": "foo",
            }
        },
    )
    response = respond(tally, user="u1", foo=1)
    assert response.status_code == 400
    assert response.json()["error"] == {
        "message": "Unknown parameter: 'foo'.",
        "type": "invalid_request_error",
        "code": "unknown_parameter",
        "param": "foo",
    }
    [row] = request_rows(tally.flask_app)
    assert (row.endpoint, row.status, row.error_code) == ("responses", 400, "unknown_parameter")


@pytest.mark.parametrize(
    ("body", "param", "message"),
    [
        ({"input": "hi"}, "model", "model is required"),
        ({**RESPONSES_BODY, "input": 3}, "input", "input must be a string or an array"),
        ({**RESPONSES_BODY, "stream": "yes"}, "stream", "stream must be a boolean"),
        (
            {**RESPONSES_BODY, "instructions": ["x"]},
            "instructions",
            "instructions must be a string",
        ),
        ({**RESPONSES_BODY, "safety_identifier": ""}, "safety_identifier", "1 to 255 characters"),
        ([1, 2], None, "must be a JSON object"),
    ],
)
def test_bad_bodies_are_refused_naming_the_field_and_cost_nothing(
    tally, upstream, body, param, message
):
    response = respond(tally, body)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["param"] == param and message in error["message"]
    assert upstream.requests == []
    only_refusal(tally.flask_app, response, 400, error["code"] or error["type"], "responses")


def test_openai_dialect_refuses_an_unhashed_id_longer_than_64(tally, upstream):
    configure(tally.flask_app, hash_mode="none", dialect="openai", prefix="")
    upstream.reply(json=response_object())
    assert respond(tally, user="u" * 64).status_code == 200
    response = respond(tally, user="u" * 65)
    assert response.status_code == 400
    error = response.json()["error"]
    assert (error["param"], error["code"]) == ("user", "identifier_too_long")
    assert "65 characters; the limit is 64" in error["message"]
    assert len(upstream.requests) == 1
