"""The /v1 API's calls are answered without Flask (blueprints/api/calls.py, DirectCalls),
except for a browser's (an ``Origin``: CORS is the Flask blueprint's). Both ways must
answer alike: each request here is sent both ways, over real HTTP, and the status, the
headers, the bytes of the body, what the upstream received and the request row are
compared. Only what differs by design may differ: the request id, the Date, and the
``Vary: Origin`` of an answer to a browser."""

from __future__ import annotations

import json
import time

import pytest
import requests

import blueprints.api.v1
from tests.helpers.api import BASE, EMBEDDINGS_BODY, RESPONSES_BODY
from tests.helpers.limits import set_limits
from tests.helpers.payloads import chunks, completion, embedding_answer, response_object
from tests.helpers.rows import request_rows

BROWSER = {"Origin": "https://no-key-allows-this.example"}  # CORS adds only Vary: Origin
LEFT_OUT = {"date", "x-request-id", "vary", "server", "connection", "keep-alive"}
ROW_FIELDS = [
    "endpoint",
    "model",
    "stream",
    "status",
    "error_code",
    "error_message",
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
    "cached_tokens",
    "cost",
    "generation_id",
    "is_demo",
    "cost_source",
    "refused",
]


@pytest.fixture
def flask_views(monkeypatch):
    """How many calls the Flask blueprint's views served."""
    served = []
    serve = blueprints.api.v1.serve

    def counted(*args, **kwargs):
        served.append(args[1].name)
        return serve(*args, **kwargs)

    monkeypatch.setattr(blueprints.api.v1, "serve", counted)
    return served


def both_ways(tally, upstream, path, body, headers=None, answer=None, flask_views=None):
    """The request sent without, then with an Origin; the two answers (body read whole),
    what the upstream received each time, and the two request rows (or None)."""
    results = []
    for extra in ({}, BROWSER):
        if answer is not None:
            upstream.reply(**answer)
        before = len(upstream.requests)
        rows_before = len(request_rows(tally.flask_app))
        sent = {"Authorization": f"Bearer {tally.key}", **(headers or {}), **extra}
        if isinstance(body, tuple):  # ("chunked", bytes): sent in chunks, no length
            kwargs = {"data": iter([body[1][:10], body[1][10:]])}
        else:
            kwargs = {"data": body} if isinstance(body, bytes) else {"json": body}
        response = requests.post(tally.url + path, headers=sent, timeout=10, **kwargs)
        content = response.content
        received = [(r.path, r.body) for r in upstream.requests[before:]]
        rows = request_rows(tally.flask_app)[rows_before:]
        results.append((response, content, received, rows))
    return results


def assert_alike(results):
    (direct, direct_body, direct_sent, direct_rows), (flask, flask_body, flask_sent, flask_rows) = (
        results
    )
    assert direct.status_code == flask.status_code
    assert direct.reason == flask.reason
    # the first call, once admitted, counted against the end user's quota
    counted = 1 if direct_sent else 0
    assert _headers(direct) == _headers(flask, counted)
    assert direct_body == flask_body
    assert direct_sent == flask_sent
    assert [_row(r) for r in direct_rows] == [_row(r) for r in flask_rows]
    assert len(direct.headers["X-Request-Id"]) == 32
    assert "Vary" not in direct.headers and flask.headers["Vary"] == "Origin"
    for response, rows in ((direct, direct_rows), (flask, flask_rows)):
        assert [row.request_id for row in rows] == [response.headers["X-Request-Id"]] * len(rows)


def _headers(response, counted: int = 0) -> list[tuple[str, str]]:
    """The headers but those left out; ``counted``: calls counted since the answer it is
    compared with (added back to its X-RateLimit-Remaining* figures)."""
    return [
        (k, _figure(k, v, counted))
        for k, v in response.raw.headers.items()
        if k.lower() not in LEFT_OUT
    ]


def _figure(name: str, value: str, counted: int) -> str:
    if name.startswith("X-RateLimit-Remaining"):
        return str(int(value) + counted)
    if name.startswith("X-RateLimit-Reset"):  # a time: the two calls may be a second apart
        return "a time" if abs(int(value) - time.time()) < 2 * 86400 else value
    return value


def _row(row) -> dict:
    return {name: getattr(row, name) for name in ROW_FIELDS} | {
        "user": row.user.external_id if row.user else None
    }


CASES = {
    "chat": ("/v1/chat/completions", {**BASE, "user": "u-1"}, {}, {"json": completion()}),
    "chat streamed": (
        "/v1/chat/completions",
        {**BASE, "stream": True},
        {"X-Tally-User": "u-2"},
        {"events": chunks(["Hel", "lo"])},
    ),
    "responses": (
        "/v1/responses",
        {**RESPONSES_BODY, "user": "u-3"},
        {},
        {"json": response_object()},
    ),
    "embeddings": ("/v1/embeddings", EMBEDDINGS_BODY, {}, {"json": embedding_answer(2)}),
    "passed-on headers": (
        "/v1/chat/completions",
        BASE,
        {"HTTP-Referer": "https://app.example", "X-Title": "App"},
        {"json": completion()},
    ),
    "chunked": (
        "/v1/chat/completions",
        ("chunked", json.dumps({**BASE, "user": "u-4"}).encode()),
        {},
        {"json": completion()},
    ),
    "chunked, too large": (
        "/v1/chat/completions",
        ("chunked", b'{"x": "' + b"a" * 70000 + b'"}'),
        {},
        None,
    ),
    "not JSON": ("/v1/chat/completions", b"{not json", {}, None),
    "NaN": ("/v1/chat/completions", b'{"model": "m", "temperature": NaN}', {}, None),
    "too deep": ("/v1/chat/completions", b"[" * 200 + b"]" * 200, {}, None),
    "too large": ("/v1/chat/completions", b'{"x": "' + b"a" * 70000 + b'"}', {}, None),
    "bad body": ("/v1/embeddings", {"model": "m"}, {}, None),
    "NUL in the user": ("/v1/chat/completions", {**BASE, "user": "a\u0000b"}, {}, None),
    "upstream error": (
        "/v1/chat/completions",
        BASE,
        {},
        {"status": 503, "json": {"error": {"message": "overloaded", "code": 503}}},
    ),
    "upstream not JSON": ("/v1/chat/completions", BASE, {}, {"raw": b"<html>", "status": 200}),
}


@pytest.mark.parametrize("case", CASES)
def test_a_call_is_answered_alike_with_and_without_flask(tally, upstream, flask_views, case):
    path, body, headers, answer = CASES[case]
    results = both_ways(tally, upstream, path, body, headers, answer)
    assert_alike(results)
    assert len(flask_views) == 1  # the browser's, not the other


def test_keys_are_checked_alike(tally, upstream, flask_views):
    for key in ("", "Bearer", "Bearer sk-tally-nope", "Basic abc"):
        results = []
        for extra in ({}, BROWSER):
            headers = {"Authorization": key, **extra} if key else extra
            response = requests.post(
                tally.url + "/v1/chat/completions", json=BASE, headers=headers, timeout=10
            )
            results.append(response)
        direct, flask = results
        assert direct.status_code == flask.status_code == 401
        assert _headers(direct) == _headers(flask)
        assert direct.json() == flask.json()
        assert direct.headers["WWW-Authenticate"] == 'Bearer realm="tally"'
    assert flask_views == []  # refused before the view's call
    assert upstream.requests == []


def test_a_limit_refuses_alike(tally, upstream, flask_views):
    set_limits(tally.flask_app, "tier:default", "messages=2")
    results = both_ways(tally, upstream, "/v1/chat/completions", {**BASE, "user": "u-9"})
    assert [r[0].status_code for r in results] == [200, 200]
    results = both_ways(tally, upstream, "/v1/chat/completions", {**BASE, "user": "u-9"})
    direct, flask = results[0][0], results[1][0]
    assert direct.status_code == flask.status_code == 429
    assert direct.json() == flask.json()
    assert _headers(direct) == _headers(flask)
    assert direct.headers["X-RateLimit-Remaining"] == "0"


def test_only_a_post_to_a_call_is_answered_without_flask(tally, flask_views):
    get = requests.get(tally.url + "/v1/chat/completions", timeout=10)
    assert get.status_code == 405 and get.json()["error"]["type"] == "invalid_request_error"
    slash = requests.post(tally.url + "/v1/chat/completions/", json=BASE, timeout=10)
    assert slash.status_code in (308, 404)
    assert flask_views == []


def test_an_error_of_its_own_is_logged_with_the_request_id(tally, monkeypatch, caplog):
    def broken(*_, **__):
        raise RuntimeError("a bug")

    monkeypatch.setattr("blueprints.api.calls.proxy", broken)
    response = requests.post(
        tally.url + "/v1/chat/completions",
        json=BASE,
        headers={"Authorization": f"Bearer {tally.key}"},
        timeout=10,
    )
    request_id = response.headers["X-Request-Id"]
    assert response.status_code == 500
    assert response.json()["error"] == {
        "message": f"Internal error (request {request_id}). It has been logged.",
        "type": "api_error",
        "param": None,
        "code": None,
    }
    assert "a bug" not in response.text
    logged = [r for r in caplog.records if r.name == "blueprints.api"]
    assert [r.getMessage() for r in logged] == [f"unhandled error in request {request_id}"]
    assert logged[0].exc_info[0] is RuntimeError
    assert json.loads(response.content)  # one JSON body, no stack trace


def _padded(size: int) -> bytes:
    """A chat body of exactly ``size`` bytes."""
    head = json.dumps({**BASE, "user": "u-5", "pad": ""})[:-2].encode()  # up to the pad's "
    return head + b"x" * (size - len(head) - 2) + b'"}'


@pytest.mark.parametrize("browser", [False, True])
def test_a_chunked_body_is_refused_only_past_the_limit(tally, upstream, browser):
    """TALLY_MAX_BODY_BYTES (65,536 here) holds for a chunked body as for one with a
    length: at the limit it is read whole; one byte past it is a 413, not JSON cut short."""
    headers = {"Authorization": f"Bearer {tally.key}", **(BROWSER if browser else {})}
    answers = []
    for size in (65536, 65537):
        body = _padded(size)
        assert len(body) == size
        answers.append(
            requests.post(
                tally.url + "/v1/chat/completions",
                data=iter([body[:30000], body[30000:]]),
                headers=headers,
                timeout=10,
            )
        )
    at_limit, past_it = answers
    assert at_limit.status_code == 200
    assert upstream.last.body["pad"] == "x" * (65536 - len(_padded(0)))
    assert past_it.status_code == 413
    assert past_it.json()["error"]["code"] == "request_too_large"
