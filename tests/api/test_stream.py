"""Streaming over real HTTP: bytes relayed unchanged and at once, usage captured, and a
row written however the stream ends."""

import json
import socket
import threading

import pytest

from tests.helpers.api import body_of, chat
from tests.helpers.payloads import chunks, sse
from tests.helpers.rows import configure, request_rows
from tests.helpers.waiting import wait_for

PROCESSING = b": OPENROUTER PROCESSING\n\n"


def test_streamed_bytes_are_the_upstreams_when_the_client_asked_for_usage(tally, upstream):
    events = [PROCESSING, *chunks(["Hel", "lo", "!"])]
    upstream.reply(events=events, headers={"X-Generation-Id": "gen-fake-2"})
    response = chat(tally, stream=True, user="u1", stream_options={"include_usage": True})
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/event-stream")
    assert response.headers["X-Generation-Id"] == "gen-fake-2"
    assert body_of(response) == sse(events)
    assert upstream.last.body["stream_options"] == {"include_usage": True}


def test_usage_is_requested_upstream_but_hidden_from_clients_that_did_not_ask(tally, upstream):
    events = chunks(["Hi"])
    upstream.reply(events=events)
    response = chat(tally, stream=True, user="u1")
    assert body_of(response) == sse(events[:-1])  # everything but the usage-only chunk
    assert upstream.last.body["stream"] is True
    assert upstream.last.body["stream_options"] == {"include_usage": True}
    [row] = wait_for(lambda: request_rows(tally.flask_app))
    assert (row.prompt_tokens, row.completion_tokens, row.total_tokens) == (9, 1, 10)
    assert row.cost == pytest.approx(0.0007)


def test_a_streamed_call_writes_one_row_with_usage_and_ttft(tally, upstream):
    configure(tally.flask_app, hash_mode="none")
    upstream.reply(events=chunks(["a", "b", "c"]))
    response = chat(tally, stream=True, user="u1")
    body_of(response)
    [row] = wait_for(lambda: request_rows(tally.flask_app))
    assert row.request_id == response.headers["X-Request-Id"]
    assert (row.status, row.error_code, row.stream) == (200, None, True)
    assert (row.prompt_tokens, row.completion_tokens) == (9, 3)
    assert row.generation_id == "gen-fake-2"
    assert row.identifier.identifier == "tally_u1"
    assert 0 < row.ttft_ms <= row.latency_ms


def test_each_event_reaches_the_client_before_the_upstream_sends_the_next(tally, upstream):
    gate = threading.Event()
    events = chunks(["first", "second"])
    upstream.reply(events=[*events[:2], gate, *events[2:]])
    response = chat(tally, stream=True, user="u1")
    received = b""
    stream = response.iter_content(chunk_size=None)
    while b"first" not in received:  # the upstream is blocked on the gate here
        received += next(stream)
    gate.set()
    received += b"".join(stream)
    assert received == sse(events[:-1])


def test_upstream_comments_and_odd_lines_pass_through(tally, upstream):
    events = [PROCESSING, b"data: not json\n\n", b"event: ping\ndata: {}\n\n", *chunks(["x"])]
    upstream.reply(events=events)
    response = chat(tally, stream=True, stream_options={"include_usage": True})
    assert body_of(response) == sse(events)


def test_an_error_event_mid_stream_is_relayed_and_recorded(tally, upstream):
    error = {"error": {"message": "Provider disconnected", "code": 502}}
    events = [*chunks(["partial"], usage=False)[:2], error]
    upstream.reply(events=events, done=False)
    response = chat(tally, stream=True, user="u1")
    assert body_of(response) == sse(events, done=False)
    [row] = wait_for(lambda: request_rows(tally.flask_app))
    assert (row.status, row.error_code) == (502, "502")
    assert row.error_message == "Provider disconnected"


def test_a_stream_cut_by_the_upstream_ends_with_an_error_event(tally, upstream):
    events = chunks(["partial"], usage=False)[:2]
    upstream.reply(events=events, cut=True)
    response = chat(tally, stream=True, user="u1")
    received = body_of(response)
    assert received.startswith(sse(events, done=False))
    last = json.loads(received.rstrip().rsplit(b"\n\n", 1)[-1].removeprefix(b"data: "))
    assert last["error"]["code"] in ("upstream_disconnected", "stream_incomplete")
    [row] = wait_for(lambda: request_rows(tally.flask_app))
    assert row.status == 502 and row.error_code == last["error"]["code"]


def test_a_client_that_disconnects_closes_the_upstream_and_still_gets_a_row(tally, upstream):
    gate = threading.Event()
    many = chunks([f"w{i} " for i in range(200)])
    upstream.reply(events=[*many[:2], gate, *many[2:]], delay=0.005)
    host, port = tally.url.removeprefix("http://").split(":")
    payload = json.dumps(
        {
            "model": "m",
            "messages": [{"role": "user", "content": "hi"}],
            "stream": True,
            "user": "leaver",
        }
    ).encode()
    sock = socket.create_connection((host, int(port)))
    sock.sendall(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        + f"Authorization: Bearer {tally.key}\r\nContent-Length: {len(payload)}\r\n\r\n".encode()
        + payload
    )
    received = b""
    while b"data:" not in received:
        received += sock.recv(65536)
    sock.close()
    gate.set()
    [row] = wait_for(lambda: request_rows(tally.flask_app))
    assert (row.status, row.error_code, row.stream) == (499, "client_disconnected", True)
    assert row.user.external_id == "leaver"
    assert wait_for(lambda: upstream.closed_streams == 1)


def test_the_demo_upstream_streams_with_usage_and_cost(client, make_key, app):
    key = make_key()
    response = client.post(
        "/v1/chat/completions",
        headers={"Authorization": f"Bearer {key}"},
        json={
            "model": "tally/demo-echo",
            "stream": True,
            "user": "user_2N4Z",
            "messages": [{"role": "user", "content": "hello demo"}],
        },
    )
    text = response.get_data(as_text=True)
    assert response.status_code == 200
    assert text.startswith(": TALLY DEMO PROCESSING\n\n")
    assert text.endswith("data: [DONE]\n\n")
    assert '"usage"' not in text  # the client did not ask for it
    content = "".join(
        json.loads(line[6:])["choices"][0]["delta"].get("content", "")
        for line in text.splitlines()
        if line.startswith("data: {") and json.loads(line[6:])["choices"]
    )
    assert "demo upstream" in content and "You said: hello demo" in content
    [row] = request_rows(app)
    assert row.is_demo and row.cost > 0 and row.completion_tokens > 0
