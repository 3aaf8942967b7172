"""The access log: one line per request, written once its answer has been sent (WSGI
middleware, installed by app.py around the whole app)."""

from __future__ import annotations

import logging
import time

from tally.logs import direct_handler


class AccessLog:
    """WSGI middleware: one line per request (method, path, status, duration, request id),
    written when the answer has been sent and its body closed, as a server's access log
    is. Writing it is then not on the way to the client, and a stream's duration runs to
    its last byte. Health probes are left out (they would drown everything else)."""

    SKIPPED = frozenset({"/healthz", "/readyz"})

    def __init__(self, wsgi_app):
        self.wsgi_app = wsgi_app
        self.log = logging.getLogger("tally.access")

    def __call__(self, environ, start_response):
        path = environ.get("PATH_INFO", "")
        if path in self.SKIPPED or not self.log.isEnabledFor(logging.INFO):
            return self.wsgi_app(environ, start_response)
        started = time.perf_counter()
        answer: dict = {}

        def start(status, headers, exc_info=None):
            answer["status"], answer["headers"] = status, headers
            return start_response(status, headers, exc_info)

        body = self.wsgi_app(environ, start)
        close = getattr(body, "close", None)
        wrapper = environ.get("wsgi.file_wrapper")
        if wrapper is not None and isinstance(body, wrapper):  # keep the server's sendfile
            self._write(environ, answer, started)
            return body

        def closed() -> None:
            try:
                if close is not None:
                    close()
            finally:
                self._write(environ, answer, started)

        return _Closing(body, closed)

    def _write(self, environ, answer: dict, started: float) -> None:
        duration_ms = round((time.perf_counter() - started) * 1000, 3)
        method = environ.get("REQUEST_METHOD", "")
        path = environ.get("PATH_INFO", "")
        if not path.isascii():  # WSGI hands it over as latin-1; the client sent UTF-8
            path = path.encode("latin-1", "replace").decode("utf-8", "replace")
        status = int(answer.get("status", "0 ?").split(" ", 1)[0])
        request_id = None
        for name, value in reversed(answer.get("headers", ())):  # the API adds it last
            if name.lower() == "x-request-id":
                request_id = value
                break
        handler = direct_handler(self.log)
        if handler is None:
            fields = {"method": method, "path": path, "status": status}
            fields["duration_ms"] = duration_ms
            if request_id:
                fields["request_id"] = request_id
            self.log.info("%s %s %s", method, path, status, extra=fields)
            return
        # the same line, without a LogRecord, the caller lookup and the handler chain:
        # a third of what the line cost (bench/steps.py, "logging")
        line = handler.formatter.access_line(
            time.time(), self.log.name, method, path, status, duration_ms, request_id
        )
        handler.write_line(line)


class _Closing:
    """The app's answer as it is, with ``closed`` run when the server closes it (what
    werkzeug's ClosingIterator does, without the typing alias it builds per answer)."""

    __slots__ = ("_iterator", "close")

    def __init__(self, body, closed):
        self._iterator = iter(body)
        self.close = closed

    def __iter__(self):
        return self

    def __next__(self) -> bytes:
        return next(self._iterator)
