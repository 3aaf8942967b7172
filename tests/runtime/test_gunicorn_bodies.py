"""The bodies of the /v1 calls as the shipped gunicorn hands them to Tally, which reads them
itself (blueprints/api/base.py, read_body): by their length in one read, chunked to
their end, and refused past TALLY_MAX_BODY_BYTES either way with a 413 (a chunked body
over it was once cut at the limit and refused as JSON cut short: a 400), each refusal
with its request row, and the client's next call answered."""

from __future__ import annotations

import json

import pytest
import requests

from tests.helpers.gunicorn import start_gunicorn, stop, tally_env
from tests.helpers.rows import request_rows
from tests.helpers.waiting import wait_for

LIMIT = 4096
BODY = {"model": "m", "messages": [{"role": "user", "content": "héllo \u2028 ✓"}], "user": "u-1"}


@pytest.fixture
def small_bodies(database_url, upstream, app):
    proc = start_gunicorn(
        tally_env(database_url, TALLY_UPSTREAM_URL=upstream.url, TALLY_MAX_BODY_BYTES=str(LIMIT))
    )
    try:
        yield proc
    finally:
        stop(proc)


def _post(server, key, data, session=None):
    return (session or requests).post(
        server.url + "/v1/chat/completions",
        data=data,
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
        timeout=10,
    )


def test_a_body_is_read_whole_by_its_length_and_in_chunks(small_bodies, upstream, make_key):
    key = make_key()
    raw = json.dumps(BODY, ensure_ascii=False).encode()
    by_length = _post(small_bodies, key, raw)
    chunked = _post(small_bodies, key, iter([raw[:7], raw[7:20], raw[20:]]))
    assert by_length.status_code == chunked.status_code == 200
    sent = [r.body for r in upstream.requests]
    assert sent[0] == sent[1]
    assert sent[0]["messages"] == BODY["messages"]


def test_a_body_over_the_limit_is_a_413_by_length_or_in_chunks(
    small_bodies, upstream, app, make_key
):
    key = make_key()
    big = json.dumps({**BODY, "pad": "x" * LIMIT}).encode()
    with requests.Session() as session:  # one keep-alive connection
        by_length = _post(small_bodies, key, big, session)
        chunked = _post(small_bodies, key, iter([big[:1000], big[1000:]]), session)
        after = _post(small_bodies, key, json.dumps(BODY).encode(), session)
    for refused in (by_length, chunked):
        assert refused.status_code == 413
        assert refused.json()["error"] == {
            "message": f"The request body is larger than {LIMIT} bytes.",
            "type": "invalid_request_error",
            "param": None,
            "code": "request_too_large",
        }
        assert len(refused.headers["X-Request-Id"]) == 32
    assert after.status_code == 200
    assert len(upstream.requests) == 1  # the refusals went nowhere
    rows = wait_for(lambda: len(found := request_rows(app)) == 3 and found)  # written apart
    refusals = [row for row in rows if row.refused]
    assert [(row.status, row.error_code) for row in refusals] == [(413, "request_too_large")] * 2
    assert {row.request_id for row in refusals} == {
        by_length.headers["X-Request-Id"],
        chunked.headers["X-Request-Id"],
    }
