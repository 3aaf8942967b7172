"""A client that sends its request body a byte a second (slowloris) does not keep a
console or API connection of a gunicorn worker: past TALLY_BODY_TIMEOUT the read is cut
(408, in OpenAI's shape on /v1, a page on the console) and the connection closed; a body
the app never reads closes the connection once the answer is sent (blueprints/bodies.py).
"""

from __future__ import annotations

import json
import socket
import threading
import time
from urllib.parse import urlsplit

import pytest
import requests

from tests.helpers.gunicorn import start_gunicorn, stop, tally_env

BOUND = 2  # seconds: TALLY_BODY_TIMEOUT of these servers


@pytest.fixture
def server(database_url, upstream, app):
    env = tally_env(database_url, TALLY_UPSTREAM_URL=upstream.url, TALLY_BODY_TIMEOUT=str(BOUND))
    proc = start_gunicorn(env)
    try:
        yield proc
    finally:
        stop(proc)


def trickle(url: str, head: str, length: int, per_second: float = 1.0, most: float = 30):
    """Send ``head`` with a Content-Length of ``length``, then the body a byte every
    1/``per_second`` s until the server answers, closes, or ``most`` seconds pass.
    Returns (the answer's bytes up to the connection's close, seconds taken, bytes sent)."""
    parts = urlsplit(url)
    sock = socket.create_connection((parts.hostname, parts.port), timeout=most)
    started = time.monotonic()
    sent = 0
    try:
        sock.sendall((head + f"Content-Length: {length}\r\n\r\n").encode())
        # the bytes go half a period off the whole seconds, where the bound falls: a byte
        # sent just as the server closes would come back as a reset that loses its answer
        sock.settimeout(0.5 / per_second)
        answer = b""
        while time.monotonic() - started < most:
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                sock.settimeout(1 / per_second)
                if sent < length:
                    try:
                        sock.sendall(b"{" if sent == 0 else b" ")
                        sent += 1
                    except OSError:  # the server has closed its side
                        pass
                continue
            if not chunk:  # closed by the server
                return answer, time.monotonic() - started, sent
            answer += chunk
        raise AssertionError(f"the connection is still open after {most} s: {answer!r}")
    finally:
        sock.close()


def split(answer: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), {k.lower(): v for k, v in headers.items()}, body


def test_a_trickled_api_body_is_cut_at_the_bound_in_openais_shape(server, make_key):
    key = make_key()
    head = (
        "POST /v1/chat/completions HTTP/1.1\r\nHost: tally\r\n"
        f"Authorization: Bearer {key}\r\nContent-Type: application/json\r\n"
    )
    answer, took, sent = trickle(server.url, head, 10_000)
    status, headers, body = split(answer)
    assert status == 408
    assert headers["content-type"] == "application/json"
    error = json.loads(body)["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert "did not arrive" in error["message"]
    assert BOUND <= took < BOUND + 4 and sent < 10  # cut at the bound, connection closed


def test_a_trickled_login_form_is_cut_at_the_bound_with_a_page(server):
    head = (
        "POST /login HTTP/1.1\r\nHost: tally\r\nContent-Type: application/x-www-form-urlencoded\r\n"
    )
    answer, took, _ = trickle(server.url, head, 10_000)
    status, headers, body = split(answer)
    assert (status, headers["content-type"]) == (408, "text/html; charset=utf-8")
    assert b"did not arrive" in body and b"Traceback" not in body
    assert BOUND <= took < BOUND + 4


def test_a_body_the_app_never_reads_closes_the_connection_after_the_answer(server):
    """A 401 comes before the body is read: the connection is not kept to read it."""
    head = "POST /v1/chat/completions HTTP/1.1\r\nHost: tally\r\n"
    answer, took, _ = trickle(server.url, head, 10_000)
    assert split(answer)[0] == 401
    assert took < BOUND + 2


def test_the_worker_answers_others_meanwhile_and_a_prompt_body_is_not_cut(server, make_key):
    """The one worker serves quick requests while a body trickles in, and bodies that
    arrive in time are served on one kept-alive connection as before."""
    key = make_key()
    head = "POST /v1/chat/completions HTTP/1.1\r\nHost: tally\r\n"
    slow = threading.Thread(
        target=trickle, args=(server.url, head + f"Authorization: Bearer {key}\r\n", 10_000)
    )
    slow.start()
    try:
        time.sleep(0.5)
        quick = requests.Session()
        payload = {"model": "demo", "messages": [{"role": "user", "content": "hi"}]}
        started = time.monotonic()
        for _ in range(3):
            answer = quick.post(
                server.url + "/v1/chat/completions",
                json=payload,
                headers={"Authorization": f"Bearer {key}"},
                timeout=10,
            )
            assert answer.status_code == 200, answer.text
        assert time.monotonic() - started < BOUND
    finally:
        slow.join(timeout=30)
