"""What Tally changes in gunicorn, installed by ``gunicorn.conf.py``.

gunicorn writes a response's head and its first body bytes with two ``sendall`` calls:
two packets, and the client wakes twice before it can act on the answer (a stream's
first event, a whole JSON answer). :class:`CoalescingResponse` sends them together.
Everything else (framing, Content-Length truncation, HEAD, sendfile) stays gunicorn's.
"""

from __future__ import annotations

from gunicorn.http import wsgi


class _Collector:
    """Stands in for the socket while gunicorn frames the first write."""

    def __init__(self):
        self.parts: list[bytes] = []

    def sendall(self, data: bytes) -> None:
        """Keep the bytes instead of sending them."""
        self.parts.append(data)


class CoalescingResponse(wsgi.Response):
    """A gunicorn response whose head leaves in one send with the first body bytes."""

    def write(self, arg):
        """As gunicorn's, but the first call sends head and body in one ``sendall``."""
        if self.headers_sent:
            return super().write(arg)
        sock, collector = self.sock, _Collector()
        self.sock = collector
        try:
            super().write(arg)
        finally:
            self.sock = sock
            if collector.parts:
                sock.sendall(b"".join(collector.parts))


def install() -> None:
    """Make every gunicorn worker (of any class) answer with :class:`CoalescingResponse`."""
    wsgi.Response = CoalescingResponse
