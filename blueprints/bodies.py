"""A bound on the time a request body may take to arrive (``TALLY_BODY_TIMEOUT``).

gunicorn bounds nothing of a request body: a client that sends one byte a second keeps a
connection of a worker (a greenlet and one of its ``worker_connections``) for as long as
it likes, and a few thousand such clients take them all. nginx in front buffers bodies
(docs/deployment.md), but gunicorn may be reached directly. :class:`BodyDeadline` gives
every body a deadline counted from the moment the request reached the app:

- the app's reads past it raise :class:`BodyTimeout` (werkzeug's 408: a JSON error on the
  API, a page on the console). Under gevent (the shipped worker class) a read that is
  waiting is interrupted at the deadline (``gevent.Timeout``); under other worker classes
  a read is checked when it starts, so only nginx's buffering bounds them;
- a body the app did not read to its end (an answer given before it: a 401, a 413)
  closes the connection once the answer is done, rather than being read on.

gunicorn closes a connection whose body read raised (its ``Body.failed``), so a client cut
off at the deadline never gets a second request read from the middle of its first.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterable
from typing import Any

from werkzeug.exceptions import RequestTimeout

DRAIN_CHUNK = 64 * 1024  # the fallback's reads of a body left unread


class BodyTimeout(RequestTimeout):
    """The request body did not arrive in time."""

    description = "The request body did not arrive within the server's time limit."


@functools.cache
def _gevent_timeout() -> Callable[..., Any] | None:
    """gevent's Timeout when this process runs on gevent's hub (gunicorn's gevent worker
    patches the socket module before it loads the app), else None: nothing can interrupt
    a blocking read then. Looked up once per process, not per body."""
    try:
        from gevent import Timeout, monkey
    except ImportError:  # pragma: no cover - gevent is a dependency
        return None
    return Timeout if monkey.is_module_patched("socket") else None


class DeadlineBody:
    """``wsgi.input`` with a deadline (``time.monotonic()``) on every read."""

    def __init__(self, stream, deadline: float, length: int | None):
        self.stream = stream
        self.deadline = deadline
        self.left = length  # bytes still to come when the length is known
        self.ended = length == 0
        self._timeout = _gevent_timeout()

    def _bounded(self, read: Callable[..., bytes], *args: Any) -> bytes:
        if self.ended and self.left is not None:  # all of it was read: nothing to wait for
            return b""
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            raise BodyTimeout()
        if self._timeout is None:
            data = read(*args)
        else:
            # the exception, not gevent's Timeout, is raised in the read: gunicorn's Body
            # then marks itself failed (an Exception), and the connection is closed
            # (the class: gevent's throw makes the instance only if the deadline comes)
            with self._timeout(remaining, BodyTimeout):
                data = read(*args)
        self._count(data, *args)
        return data

    def _count(self, data: bytes, size: int | None = None, *_: Any) -> None:
        if self.left is not None:
            self.left -= len(data)
            self.ended = self.left <= 0
        if not data and (size is None or size != 0):
            self.ended = True

    def read(self, size: int | None = -1) -> bytes:
        """As ``wsgi.input.read``, by the deadline."""
        if size is None or size < 0:
            return self._bounded(self.stream.read)
        return self._bounded(self.stream.read, size)

    def readline(self, size: int | None = -1) -> bytes:
        """As ``wsgi.input.readline``, by the deadline."""
        if size is None or size < 0:
            return self._bounded(self.stream.readline)
        return self._bounded(self.stream.readline, size)

    def readlines(self, hint: int | None = None) -> list[bytes]:
        """Every line, by the deadline."""
        return list(iter(self.readline, b""))

    def __iter__(self):
        return iter(self.readline, b"")

    def finish(self) -> None:
        """The answer is done: if the app left some of the body unread, the connection
        must not be read on from the middle of it. gunicorn closes a connection whose
        body failed (``Body.failed``); with a gunicorn that does not have it, what is left
        is read and dropped, by the deadline (past it the read fails)."""
        if self.ended:
            return
        if hasattr(self.stream, "failed"):
            self.stream.failed = True
            return
        try:
            while not self.ended:
                self.read(DRAIN_CHUNK)
        except (BodyTimeout, OSError, ValueError):
            pass


class BodyDeadline:
    """WSGI middleware: every request body must arrive within ``seconds``."""

    def __init__(self, wsgi_app, seconds: float):
        self.wsgi_app = wsgi_app
        self.seconds = seconds

    def __call__(self, environ, start_response) -> Iterable[bytes]:
        length = _content_length(environ)
        chunked = "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower()
        stream = environ.get("wsgi.input")
        if stream is None or (not length and not chunked):
            return self.wsgi_app(environ, start_response)
        body = DeadlineBody(stream, time.monotonic() + self.seconds, None if chunked else length)
        environ["wsgi.input"] = body
        return _Answer(self.wsgi_app(environ, start_response), body)


class _Answer:
    """The app's answer; once it is closed, the body is finished (:meth:`DeadlineBody.finish`)."""

    def __init__(self, answer: Iterable[bytes], body: DeadlineBody):
        self.answer, self.body = answer, body

    def __iter__(self):
        return iter(self.answer)

    def close(self) -> None:
        """Close the app's answer, then finish the body."""
        try:
            close = getattr(self.answer, "close", None)
            if close is not None:
                close()
        finally:
            self.body.finish()


def _content_length(environ) -> int | None:
    raw = environ.get("CONTENT_LENGTH", "")
    return int(raw) if raw.isdigit() else None
