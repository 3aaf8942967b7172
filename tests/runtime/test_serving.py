"""tally.runtime.serving: gunicorn's answers, with the head and the first body bytes in one send,
byte for byte gunicorn's otherwise; these fail when the gunicorn internals it uses move."""

from __future__ import annotations

import gunicorn
import pytest
from gunicorn import util
from gunicorn.config import Config
from gunicorn.http import wsgi

from tally.runtime.serving import CoalescingResponse, install, supported
from tests.helpers.gunicorn import keep_gunicorns_own


class FakeRequest:
    def __init__(self, method: str = "POST"):
        self.method, self.version = method, (1, 1)

    def should_close(self) -> bool:
        return False


class RecordingSocket:
    def __init__(self):
        self.sends: list[bytes] = []

    def sendall(self, data: bytes) -> None:
        self.sends.append(bytes(data))


def answer(response_class, method, status, headers, body):
    sock = RecordingSocket()
    response = response_class(FakeRequest(method), sock, Config())
    response.start_response(status, headers)
    for piece in body:
        response.write(piece)
    response.close()
    return sock.sends


CASES = {
    "stream": ("POST", "200 OK", [("Content-Type", "text/event-stream")], [b"data: a\n\n"] * 3),
    "json": ("POST", "200 OK", [("Content-Length", "7")], [b'{"a":1}']),
    "truncated": ("POST", "200 OK", [("Content-Length", "2")], [b"abcdef"]),
    "head": ("HEAD", "200 OK", [("Content-Length", "7")], [b'{"a":1}']),
    "no body": ("POST", "204 No Content", [], []),
}


@pytest.mark.parametrize("case", CASES)
def test_the_bytes_on_the_wire_are_gunicorns(case):
    ours = answer(CoalescingResponse, *CASES[case])
    theirs = answer(wsgi.Response, *CASES[case])
    assert b"".join(ours) == b"".join(theirs)
    assert ours[0].startswith(b"HTTP/1.1 ")


def test_the_head_leaves_with_the_first_event():
    sends = answer(CoalescingResponse, *CASES["stream"])
    assert len(sends) == 4  # head + event 1, event 2, event 3, the last chunk
    head, _, first = sends[0].partition(b"\r\n\r\n")
    assert b"Transfer-Encoding: chunked" in head
    assert first == b"9\r\ndata: a\n\n\r\n"
    assert sends[1:] == [b"9\r\ndata: a\n\n\r\n"] * 2 + [b"0\r\n\r\n"]
    assert len(answer(wsgi.Response, *CASES["stream"])) == 5


def test_a_json_answer_is_one_send():
    [send] = answer(CoalescingResponse, *CASES["json"])
    assert send.endswith(b'\r\n\r\n{"a":1}')


def test_the_installed_gunicorn_is_one_it_supports(monkeypatch):
    keep_gunicorns_own(monkeypatch)  # restored after the test
    assert supported(), f"check tally/runtime/serving.py against gunicorn {gunicorn.__version__}"
    assert install() is True
    assert wsgi.Response is CoalescingResponse


@pytest.mark.parametrize("version", [(22, 0, 0), (28, 0, 0), (30, 1, 2)])
def test_outside_its_range_gunicorn_keeps_its_own_and_one_line_says_so(
    monkeypatch, caplog, version
):
    keep_gunicorns_own(monkeypatch)
    gunicorns = wsgi.Response, util.write_error
    monkeypatch.setattr(gunicorn, "version_info", version)
    assert install() is False
    assert (wsgi.Response, util.write_error) == gunicorns
    [record] = caplog.records
    assert "tally.runtime.serving" in record.getMessage() and record.levelname == "WARNING"
