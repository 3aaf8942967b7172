"""Servers on the loopback interface, the one way the tests serve anything on 127.0.0.1.

- :class:`LoopbackServer`: a WSGI app on werkzeug's threaded server, in a daemon thread.
  Every HTTP server of the tests is one: Tally itself (the ``serve`` and ``tally``
  fixtures), the fake upstream, the identity provider's JWKS, a browser page's origin.
- :func:`listener`: a bare listening socket, for the few tests that must speak TCP byte
  by byte (an HTTP peer that answers exactly as scripted, a proxy that cuts connections),
  which no WSGI server would let them do.
- :func:`free_port`: a port nobody listens on.

Tally under gunicorn is a subprocess, not a thread: tests.helpers.gunicorn starts it.
"""

from __future__ import annotations

import socket
import threading

from werkzeug.serving import make_server
from werkzeug.wsgi import ClosingIterator

HOST = "127.0.0.1"
POLL = 0.02  # seconds between the serving thread's checks for shutdown


def listener() -> socket.socket:
    """A TCP socket listening on a free loopback port (``getsockname()[1]``)."""
    return socket.create_server((HOST, 0))


def free_port() -> int:
    """A loopback port nobody listens on (until someone binds it a moment later)."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


class LoopbackServer:
    """``app`` (any WSGI callable) served on a free loopback port, in a thread, at
    :attr:`url` (``http://127.0.0.1:<port>``).

    :meth:`close` first waits up to ``drain`` seconds for the responses still being
    sent: Tally's server drains, so a stream's row is written before the next test
    empties the database; a fake peer does not (a stream it was told to hold would keep
    the test waiting for nothing).
    """

    def __init__(self, app, drain: float = 0.0):
        self.app = app
        self.drain = drain
        self._in_flight = 0
        self._changed = threading.Condition()
        self._server = make_server(HOST, 0, self._counted, threaded=True)
        self.port = self._server.server_port
        self.url = f"http://{HOST}:{self.port}"
        threading.Thread(target=self._server.serve_forever, args=(POLL,), daemon=True).start()

    def close(self) -> None:
        """Stop serving (after the responses in flight, up to ``drain`` seconds)."""
        if self.drain:
            with self._changed:
                self._changed.wait_for(lambda: self._in_flight == 0, timeout=self.drain)
        self._server.shutdown()
        self._server.server_close()

    def _counted(self, environ, start_response):
        """The app, counting each response until its body is done or closed."""
        with self._changed:
            self._in_flight += 1
        finished = []

        def done():
            if not finished:  # once, whether the body ran out or the server closed it
                finished.append(True)
                with self._changed:
                    self._in_flight -= 1
                    self._changed.notify_all()

        def body_then_done(body):
            try:
                yield from body
            finally:
                done()

        try:
            body = self.app(environ, start_response)
        except BaseException:
            done()
            raise
        return ClosingIterator(body_then_done(body), [getattr(body, "close", done), done])
