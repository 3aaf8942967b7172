"""What tally.runtime.serving relies on in gunicorn besides the bytes it writes (those are
tests/test_serving.py's): every worker class builds its HTTP/1 responses through
``gunicorn.http.wsgi.create``, which finds ``Response`` in its module at each call (so the
swap reaches them all), and ``Response`` has the members the subclass uses. These fail
when gunicorn moves them."""

from __future__ import annotations

import inspect

import pytest
from gunicorn import util
from gunicorn.config import Config
from gunicorn.http import wsgi
from gunicorn.http.parser import RequestParser
from gunicorn.workers import base, base_async, gthread, sync

from tally.runtime import refusals
from tally.runtime.serving import CoalescingResponse, install
from tests.helpers.gunicorn import keep_gunicorns_own


@pytest.fixture
def installed(monkeypatch):
    """tally.runtime.serving installed, gunicorn's own restored afterwards."""
    keep_gunicorns_own(monkeypatch)
    assert install() is True


def parsed(raw: bytes):
    """A request as gunicorn's parser reads it off a connection."""
    return next(iter(RequestParser(Config(), [raw], ("127.0.0.1", 50000))))


def test_a_request_gets_the_coalescing_response(installed):
    request = parsed(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: tally\r\nContent-Length: 0\r\n\r\n"
    )
    response, environ = wsgi.create(
        request, object(), ("127.0.0.1", 50000), ("127.0.0.1", 8000), Config()
    )
    assert type(response) is CoalescingResponse
    assert environ["PATH_INFO"] == "/v1/chat/completions"


@pytest.mark.parametrize(
    "handler",
    [
        sync.SyncWorker.handle_request,
        gthread.ThreadWorker.handle_request,
        base_async.AsyncWorker.handle_request,
    ],
    ids=["sync", "gthread", "gevent (async)"],
)
def test_every_worker_class_builds_its_responses_with_create(handler):
    assert "wsgi.create(" in inspect.getsource(handler)


def test_the_gevent_worker_handles_requests_as_the_async_one():
    from gunicorn.workers.ggevent import GeventWorker

    assert issubclass(GeventWorker, base_async.AsyncWorker)
    assert "super().handle_request(" in inspect.getsource(GeventWorker.handle_request)


def test_the_response_members_the_subclass_uses_are_there():
    params = list(inspect.signature(wsgi.Response.__init__).parameters)
    assert params[:4] == ["self", "req", "sock", "cfg"]
    assert list(inspect.signature(wsgi.Response.write).parameters) == ["self", "arg"]
    assert callable(wsgi.Response.send_headers)
    response = wsgi.Response(parsed(b"GET / HTTP/1.1\r\nHost: tally\r\n\r\n"), object(), Config())
    assert response.headers_sent is False and response.sock is not None


def test_refusals_are_answered_through_the_swapped_write_error(installed):
    """tally.runtime.refusals: every worker class refuses through ``Worker.handle_error``
    (none has its own), which writes through ``util.write_error`` looked up at the call."""
    assert base.Worker.handle_error is refusals.handle_error
    assert util.write_error is refusals.write_error
    assert "util.write_error(client, status_int, reason, mesg)" in inspect.getsource(
        refusals._gunicorn_handle_error
    )
    from gunicorn.workers.ggevent import GeventWorker

    for worker in (GeventWorker, gthread.ThreadWorker, sync.SyncWorker):
        assert worker.handle_error is refusals.handle_error


def test_a_too_long_request_line_leaves_its_start_in_the_parsers_frames():
    """A request line past the limit never becomes a request: its path is found in the
    parser's frames (tally.runtime.refusals.request_path)."""
    raw = b"GET /v1/models?q=" + b"x" * 5000 + b" HTTP/1.1\r\nHost: t\r\n\r\n"
    with pytest.raises(Exception) as caught:
        parsed(raw)
    assert type(caught.value).__name__ == "LimitRequestLine"
    assert refusals.request_path(None, caught.value) == "/v1/models"
    headers = b"GET /v1/models HTTP/1.1\r\nX-Big: " + b"y" * 9000 + b"\r\n\r\n"
    with pytest.raises(Exception) as caught:
        parsed(headers)
    assert type(caught.value).__name__ == "LimitRequestHeaders"
    assert refusals.request_path(None, caught.value) == "/v1/models"
