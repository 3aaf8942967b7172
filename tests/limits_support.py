"""Helpers for the limits tests: a clock the test moves, and policies set like the CLI."""

from __future__ import annotations

import contextlib
import time
from datetime import UTC, datetime

from tally.limits.policy import parse_assignments
from tally.services.limit_policies import reset_user, set_policy
from tally.services.limits import runtime_of

# Today's UTC midnight: request rows are stamped with the real time, and counters rebuilt
# from them must fall in the same day as the test's clock.
T0 = float(int(time.time()) // 86400 * 86400)


def next_month(epoch: float) -> float:
    """The start of the calendar month after ``epoch`` (UTC)."""
    moment = datetime.fromtimestamp(epoch, UTC)
    year, month = (moment.year + 1, 1) if moment.month == 12 else (moment.year, moment.month + 1)
    return datetime(year, month, 1, tzinfo=UTC).timestamp()


def iso(epoch: float) -> str:
    """``2025-12-02T01:00:01Z``."""
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Clock:
    """Epoch seconds that move only when the test says so."""

    def __init__(self, now: float = T0 + 3600):
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        """Move time forward."""
        self.now += seconds


def use_clock(flask_app, clock: Clock) -> Clock:
    """Make ``flask_app``'s limits (windows and periods) follow ``clock``."""
    runtime_of(flask_app.extensions["tally"]).set_clock(clock)
    return clock


def set_limits(flask_app, scope: str, *assignments: str) -> None:
    """``limits set SCOPE FIELD=VALUE …`` through the service."""
    with flask_app.extensions["tally"].sessions() as session:
        set_policy(session, scope, parse_assignments(assignments), "test")


def reset(flask_app, scope: str) -> None:
    """``limits reset SCOPE`` through the service."""
    with flask_app.extensions["tally"].sessions() as session:
        reset_user(session, scope, "test")


class TcpProxy:
    """A loopback TCP proxy in front of a server (Redis) that a test can cut: open
    connections are closed and new ones refused, as when the storage goes down."""

    def __init__(self, target_port: int):
        import socket
        import threading

        self._socket, self._threading = socket, threading
        self.target = ("127.0.0.1", target_port)
        self._listener = socket.socket()
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(64)
        self.port = self._listener.getsockname()[1]
        self._conns: list = []
        self._lock = threading.Lock()
        self._open = True
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while self._open:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            server = self._socket.create_connection(self.target)
            with self._lock:
                self._conns += [client, server]
            for a, b in ((client, server), (server, client)):
                self._threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(source, sink) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                with contextlib.suppress(OSError):
                    sock.shutdown(2)

    def cut(self) -> None:
        """Stop: refuse new connections, break the open ones."""
        self._open = False
        self._listener.close()
        with self._lock:
            for sock in self._conns:
                with contextlib.suppress(OSError):
                    sock.shutdown(2)
                sock.close()
            self._conns.clear()


def forget_redis_counters(url: str) -> None:
    """Drop Tally's counter keys from the Redis at ``url`` (tests leave none behind)."""
    import redis

    client = redis.Redis.from_url(url)
    try:
        for key in client.scan_iter(match="*tally/*", count=1000):
            client.delete(key)
    finally:
        client.close()


def forget_counters(flask_app) -> None:
    """Drop this deployment's limit counters (only Tally's keys: on a shared Redis other
    keys belong to others)."""
    storage = runtime_of(flask_app.extensions["tally"]).storage
    client = getattr(storage, "storage", None)  # limits' RedisStorage keeps its client here
    if client is None:
        storage.reset()
        return
    for key in client.scan_iter(match="*tally/*", count=1000):
        client.delete(key)
