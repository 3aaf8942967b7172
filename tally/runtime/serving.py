"""What Tally changes in gunicorn, installed by ``gunicorn.conf.py``.

gunicorn writes a response's head and its first body bytes with two ``sendall`` calls:
two packets, and the client wakes twice before it can act on the answer (a stream's
first event, a whole JSON answer). :class:`CoalescingResponse` sends them together.
Everything else (framing, Content-Length truncation, HEAD, sendfile) stays gunicorn's.
And the requests gunicorn refuses itself (too long a request line or headers, not HTTP)
are answered in Tally's voice, not gunicorn's HTML (tally/runtime/refusals.py).

It leans on gunicorn's internals (``Response.write`` sends the head through
``send_headers`` and ``self.sock.sendall`` and sets ``headers_sent``), so it is installed
only on the gunicorn releases in :data:`SUPPORTED`; tests/runtime/test_serving.py checks the
installed one byte for byte, tests/runtime/test_serving_internals.py that every worker
class still builds its responses through the swapped class, and both fail when those
internals move or the release leaves the range. Kept because it measurably helps a
stream's first event (docs/benchmarks.md).
"""

from __future__ import annotations

import logging

import gunicorn
from gunicorn.http import wsgi

from tally.runtime import refusals

# [first, past-the-end) gunicorn (major, minor): pyproject.toml's range (23.0 to 27.0
# checked).
SUPPORTED = ((23, 0), (28, 0))


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


def supported(version: tuple[int, ...] | None = None) -> bool:
    """True when ``version`` (default: the installed gunicorn's) is in :data:`SUPPORTED`."""
    major_minor = tuple((version or gunicorn.version_info)[:2])
    return SUPPORTED[0] <= major_minor < SUPPORTED[1]


def install(log: logging.Logger | None = None) -> bool:
    """Make every gunicorn worker (of any class) answer with :class:`CoalescingResponse`
    and refuse in Tally's voice (tally.runtime.refusals), on a supported gunicorn; on any
    other, leave gunicorn's own and say so in one line."""
    if not supported():
        (log or logging.getLogger(__name__)).warning(
            "gunicorn %s is outside %s.%s-%s.%s, the releases tally.runtime.serving was checked "
            "against: answers keep gunicorn's own writes (head and first bytes apart) "
            "and its own error pages",
            gunicorn.__version__,
            *SUPPORTED[0],
            *SUPPORTED[1],
        )
        return False
    wsgi.Response = CoalescingResponse
    refusals.install()
    return True
