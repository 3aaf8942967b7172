"""What tally.runtime.serving relies on in gunicorn besides the bytes it writes (those are
tests/test_serving.py's): every worker class builds its HTTP/1 responses through
``gunicorn.http.wsgi.create``, which finds ``Response`` in its module at each call (so the
swap reaches them all), and ``Response`` has the members the subclass uses. These fail
when gunicorn moves them."""

from __future__ import annotations

import inspect

import pytest
from gunicorn.config import Config
from gunicorn.http import wsgi
from gunicorn.http.parser import RequestParser
from gunicorn.workers import base_async, gthread, sync

from tally.runtime.serving import CoalescingResponse, install


@pytest.fixture
def installed(monkeypatch):
    """tally.runtime.serving installed, gunicorn's own Response restored afterwards."""
    monkeypatch.setattr(wsgi, "Response", wsgi.Response)
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
