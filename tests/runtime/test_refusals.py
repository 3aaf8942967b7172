"""What gunicorn refuses before the app sees a request (a request line or headers past
its limits, a request that is not HTTP) is answered in OpenAI's error shape on the API's
paths and as a plain page elsewhere, never gunicorn's HTML (tally/runtime/refusals.py),
over real HTTP against the shipped gunicorn config."""

from __future__ import annotations

import json
import socket
from urllib.parse import urlsplit

import pytest

from tally.runtime.refusals import path_of_line
from tests.helpers.gunicorn import start_gunicorn, stop, tally_env

LONG = "x" * 5000  # past limit_request_line (4094)
BIG = "y" * 9000  # past limit_request_field_size (8190)
MANY = "".join(f"X-H{n}: v\r\n" for n in range(120))  # past limit_request_fields (100)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """gunicorn on a SQLite file of its own: refusals never reach the database."""
    folder = tmp_path_factory.mktemp("refusals")
    env = tally_env(f"sqlite:///{folder / 'tally.db'}", TALLY_INSTANCE_PATH=str(folder))
    proc = start_gunicorn(env)
    try:
        yield proc
    finally:
        stop(proc)


def exchange(url: str, raw: str) -> tuple[int, dict[str, str], bytes]:
    """Send ``raw`` on a new connection; the answer, read to the connection's close."""
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as sock:
        sock.sendall(raw.encode("latin-1"))
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v for k, v in (line.split(": ", 1) for line in lines[1:])}
    return int(lines[0].split()[1]), headers, body


API_CASES = {
    "request line": (f"GET /v1/models?q={LONG} HTTP/1.1\r\nHost: t\r\n\r\n", 414),
    "header size": (f"POST /v1/chat/completions HTTP/1.1\r\nHost: t\r\nX-Big: {BIG}\r\n\r\n", 431),
    "header count": (f"GET /v1/models HTTP/1.1\r\nHost: t\r\n{MANY}\r\n", 431),
    "bad header name": ("GET /v1/models HTTP/1.1\r\nHost: t\r\nBad Name: x\r\n\r\n", 400),
    "admin API": (f"GET /admin/api/usage?{LONG} HTTP/1.1\r\nHost: t\r\n\r\n", 414),
}
CODES = {414: "request_line_too_long", 431: "request_headers_too_large", 400: "invalid_request"}


@pytest.mark.parametrize("case", API_CASES)
def test_the_api_gets_openais_error_shape(server, case):
    raw, status = API_CASES[case]
    got, headers, body = exchange(server.url, raw)
    assert got == status
    assert headers["content-type"] == "application/json"
    assert int(headers["content-length"]) == len(body)
    error = json.loads(body)["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error"
    assert error["code"] == CODES[status]
    assert error["param"] is None and error["message"]


PAGE_CASES = {
    "request line": (f"GET /keys?q={LONG} HTTP/1.1\r\nHost: t\r\n\r\n", 414, "too long"),
    "cookies": (f"GET / HTTP/1.1\r\nHost: t\r\nCookie: session={BIG}\r\n\r\n", 431, "cookies"),
    "header count": (f"POST /login HTTP/1.1\r\nHost: t\r\n{MANY}\r\n", 431, "cookies"),
    "not HTTP": ("HELLO THERE\r\n\r\n", 400, "could not read"),
}


@pytest.mark.parametrize("case", PAGE_CASES)
def test_the_console_gets_a_plain_page(server, case):
    raw, status, says = PAGE_CASES[case]
    got, headers, body = exchange(server.url, raw)
    assert got == status
    assert headers["content-type"] == "text/html; charset=utf-8"
    assert headers["content-security-policy"] == "default-src 'none'"
    page = body.decode()
    assert page.startswith("<!doctype html>") and f"<h1>{status} · " in page
    assert says in page and "Tally" in page
    assert "<h1><p>" not in page  # gunicorn's own markup
    assert LONG not in page and BIG not in page  # what was sent is not echoed back whole


def test_requests_within_the_limits_still_reach_the_app(server):
    status, headers, body = exchange(
        server.url, "GET /v1/models HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
    )
    assert status == 401 and json.loads(body)["error"]["code"] == "invalid_api_key"


@pytest.mark.parametrize(
    ("line", "path"),
    [
        (b"GET /v1/models?x=1 HTTP/1.1\r\nHost: t", "/v1/models"),
        (b"POST /v1/chat/completions" + b"x" * 100, "/v1/chat/completionsxxx" + "x" * 97),
        (b"\r\nGET /keys HTTP/1.1\r\n", "/keys"),
        (b"GET http://tally.example/v1/models HTTP/1.1\r\n", "/v1/models"),
        (b"HELLO\r\n", None),
        (b"GET  HTTP/1.1", None),
    ],
)
def test_the_path_of_a_request_line_as_read_so_far(line, path):
    assert path_of_line(line) == path
