"""The outside world is off limits: any connection beyond the loopback interface (and
local Unix sockets) fails the test that tried it."""

from __future__ import annotations

import socket

import pytest

_real_connect = socket.socket.connect


def _loopback_only(sock, address):
    host = address[0] if isinstance(address, tuple) else address
    if isinstance(host, str) and (host.startswith("127.") or host in ("::1", "localhost")):
        return _real_connect(sock, address)
    if sock.family == socket.AF_UNIX:
        return _real_connect(sock, address)
    raise AssertionError(f"test tried to reach {address!r}: only loopback is allowed")


@pytest.fixture(autouse=True)
def no_outside_network(monkeypatch):
    """Fail any unplanned outbound connection."""
    monkeypatch.setattr(socket.socket, "connect", _loopback_only)
