"""The upstream client against a raw HTTP server that answers exactly as scripted: the
request on the wire, pieces handed over the moment they arrive, the connection reused
after a complete body, compressed answers, and every failure as its domain error."""

from __future__ import annotations

import gzip
import json
import threading
import time

import pytest
import requests

from tally.errors import UpstreamError, UpstreamTimeout
from tally.proxy.openai_errors import status_of
from tally.proxy.upstream import UpstreamClient
from tests.helpers.loopback import free_port, listener

SSE_HEAD = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
)


def head(length: int, *extra: bytes) -> bytes:
    """A 200 head with a Content-Length (and any extra header lines)."""
    lines = [b"HTTP/1.1 200 OK", b"Content-Type: application/json", *extra]
    return b"\r\n".join([*lines, b"Content-Length: %d" % length, b"", b""])


def chunk(data: bytes) -> bytes:
    """``data`` framed as one HTTP/1.1 chunk."""
    return b"%x\r\n%s\r\n" % (len(data), data)


class RawServer:
    """Answers each request with the next script: bytes to send, float pauses, a
    ``threading.Event`` to wait for, None to close the connection. Keeps each request's
    bytes in ``received`` and counts connections."""

    def __init__(self, *scripts):
        self.scripts = list(scripts)
        self.received: list[bytes] = []
        self.connections = 0
        self.sock = listener()
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/v1"
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while self.scripts:
            conn, _ = self.sock.accept()
            self.connections += 1
            with conn:
                try:
                    while self.scripts and self._answer(conn):
                        pass
                except OSError:
                    pass  # the client closed its end first

    def _answer(self, conn) -> bool:
        request = b""
        while b"\r\n\r\n" not in request:
            data = conn.recv(65536)
            if not data:
                return False
            request += data
        head, _, body = request.partition(b"\r\n\r\n")
        length = int(head.lower().partition(b"content-length: ")[2].split(b"\r\n")[0] or 0)
        while len(body) < length:
            body += conn.recv(65536)
        self.received.append(head + b"\r\n\r\n" + body)
        for step in self.scripts.pop(0):
            if step is None:
                return False
            if isinstance(step, float):
                time.sleep(step)
            elif isinstance(step, threading.Event):
                step.wait(10)
            else:
                conn.sendall(step)
        return True


def chat(client: UpstreamClient, stream: bool = True):
    return client.post("/chat/completions", {"model": "m", "messages": []}, stream=stream)


def test_the_request_is_the_one_requests_would_send():
    answer = [head(2) + b"{}"]
    server = RawServer(answer, answer)
    body = {"model": "m", "messages": [{"role": "user", "content": "héllo ✓"}]}
    UpstreamClient(server.url, "sk-up", 5).post("/chat/completions", body, stream=True).close()
    requests.post(
        server.url + "/chat/completions",
        data=json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode(),
        headers={
            "Content-Type": "application/json",
            "Accept": "text/event-stream",
            "Authorization": "Bearer sk-up",
        },
        timeout=5,
    )
    ours, theirs = (request.partition(b"\r\n\r\n") for request in server.received)
    assert sorted(ours[0].split(b"\r\n")) == sorted(theirs[0].split(b"\r\n"))  # order aside
    assert ours[2] == theirs[2]
    assert ours[2].startswith(b'{"model":"m","messages":[{"role":"user","content":"h\xc3\xa9llo')


def test_a_piece_reaches_the_caller_before_the_upstream_sends_the_next():
    chunked, plain = threading.Event(), threading.Event()
    server = RawServer(
        [SSE_HEAD + chunk(b"data: 1\n\n"), chunked, chunk(b"data: 2\n\n") + b"0\r\n\r\n"],
        [head(10) + b"hello", plain, b"world"],
    )
    client = UpstreamClient(server.url, None, 5)
    for gate, first, rest in (
        (chunked, b"data: 1\n\n", b"data: 2\n\n"),
        (plain, b"hello", b"world"),
    ):
        response = chat(client)
        pieces = response.stream()
        assert next(pieces) == first  # the upstream is waiting on the gate meanwhile
        gate.set()
        assert b"".join(pieces) == rest
        response.close()
    assert server.connections == 1


def test_a_complete_body_leaves_the_connection_for_the_next_call():
    server = RawServer(
        [SSE_HEAD + chunk(b"hello") + chunk(b" world"), 0.05, b"3\r\nab", 0.05, b"c\r\n0\r\n"]
        + [0.05, b"\r\n"],
        [SSE_HEAD + chunk(b"ok") + b"0\r\nX-Trailer: 1\r\n\r\n"],
        [head(7) + b'{"a":1}'],
        [head(11) + b'{"data":[]}'],
    )
    client = UpstreamClient(server.url, None, 5)
    response = chat(client)
    assert b"".join(response.stream()) == b"hello worldabc"
    response.close()
    response = chat(client)
    assert list(response.stream()) == [b"ok"]
    response.close()
    response = chat(client, stream=False)
    assert (response.status, response.read()) == (200, b'{"a":1}')
    assert client.get("/models").read() == b'{"data":[]}'
    assert server.received[-1].startswith(b"GET /v1/models HTTP/1.1\r\n")
    assert server.connections == 1


def test_a_half_read_stream_is_closed_and_the_next_call_gets_a_new_connection():
    gate = threading.Event()
    server = RawServer([SSE_HEAD + chunk(b"a"), gate, chunk(b"b")], [head(2) + b"{}"])
    client = UpstreamClient(server.url, None, 5)
    response = chat(client)
    assert next(response.stream()) == b"a"
    response.close()
    gate.set()
    assert chat(client, stream=False).read() == b"{}"
    assert server.connections == 2


def test_a_compressed_answer_is_decoded():
    packed = gzip.compress(b'{"a":1}')
    events = gzip.compress(b"data: 1\n\ndata: [DONE]\n\n")
    server = RawServer(
        [head(len(packed), b"Content-Encoding: gzip") + packed],
        [SSE_HEAD.replace(b"\r\n\r\n", b"\r\nContent-Encoding: gzip\r\n\r\n")]
        + [chunk(events[:10]), chunk(events[10:]) + b"0\r\n\r\n"],
    )
    client = UpstreamClient(server.url, None, 5)
    assert chat(client, stream=False).read() == b'{"a":1}'
    assert b"".join(chat(client).stream()) == b"data: 1\n\ndata: [DONE]\n\n"


def test_an_unreachable_upstream():
    with pytest.raises(UpstreamError) as failure:
        chat(UpstreamClient(f"http://127.0.0.1:{free_port()}/v1", None, 5))
    assert failure.type is UpstreamError
    assert failure.value.message == "The upstream could not be reached (ConnectionError)."
    assert (status_of(failure.value), failure.value.code) == (502, "upstream_unreachable")


def test_an_upstream_that_hangs_up_without_answering():
    with pytest.raises(UpstreamError) as failure:
        chat(UpstreamClient(RawServer([None]).url, None, 5))
    assert failure.value.message == "The upstream could not be reached (ConnectionError)."


def test_a_tls_failure_is_an_ssl_error():
    sock = listener()

    def answer_in_plain_text():
        conn, _ = sock.accept()
        with conn:
            conn.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")

    threading.Thread(target=answer_in_plain_text, daemon=True).start()
    url = f"https://127.0.0.1:{sock.getsockname()[1]}/v1"
    with pytest.raises(UpstreamError) as failure:
        chat(UpstreamClient(url, None, 5))
    assert failure.value.message == "The upstream could not be reached (SSLError)."


def test_no_answer_within_the_timeout_is_a_504():
    server = RawServer([0.6, head(2) + b"{}"])
    with pytest.raises(UpstreamTimeout) as failure:
        chat(UpstreamClient(server.url, None, 0.2))
    assert failure.value.message == "The upstream did not answer within 0.2 seconds."
    assert (status_of(failure.value), failure.value.code) == (504, "upstream_timeout")


BROKEN = "The upstream connection broke before the answer was complete."
STOPPED = "The upstream stopped sending before the answer was complete."


@pytest.mark.parametrize(
    "script, error, message",
    [
        ([SSE_HEAD + chunk(b"hello") + b"5\r\nwor", None], UpstreamError, BROKEN),
        ([SSE_HEAD + chunk(b"hello") + b"zz\r\nworld\r\n", None], UpstreamError, BROKEN),
        ([SSE_HEAD + chunk(b"hello"), None], UpstreamError, BROKEN),
        ([head(10) + b"hello", None], UpstreamError, BROKEN),
        # the end comes far past the 0.2 s timeout: a busy machine cannot make it arrive in time
        ([SSE_HEAD + chunk(b"hello"), 5.0, b"0\r\n\r\n"], UpstreamTimeout, STOPPED),
    ],
    ids=["cut inside a chunk", "bad chunk size", "cut between chunks", "short body", "stall"],
)
@pytest.mark.parametrize("stream", [True, False], ids=["stream", "read"])
def test_a_body_that_stops_before_its_end(script, error, message, stream):
    client = UpstreamClient(RawServer(script).url, None, 0.2)
    with pytest.raises(UpstreamError) as failure:
        response = chat(client, stream=stream)  # without stream, the body is read here
        pieces = response.stream()
        assert next(pieces) == b"hello"
        next(pieces)
    assert failure.type is error
    assert failure.value.message == message
    expected = (
        (504, "upstream_timeout") if error is UpstreamTimeout else (502, "upstream_disconnected")
    )
    assert (status_of(failure.value), failure.value.code) == expected


def test_the_api_key_stays_out_of_reprs_and_text():
    client = UpstreamClient("https://openrouter.ai/api/v1/", "sk-or-secret", 300)
    assert "sk-or-secret" not in repr(client)
    assert client.base_url == "https://openrouter.ai/api/v1"
    assert client.scrub("bad key sk-or-secret") == "bad key [redacted]"
