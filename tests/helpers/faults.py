"""The fault harness: a loopback TCP proxy a test can cut and restore, Tally under
gunicorn on a database of the test's choosing, and a steady load that notes every
answer's status and X-Request-Id.

The proxy stands between Tally and PostgreSQL (or Redis): cutting it closes every open
connection and refuses new ones at once, as a database that restarts or fails over
does, without ever touching the machine's servers. Also used by bench/chaos.py.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent


class TcpProxy:
    """Forwards 127.0.0.1:<port> to ``target``; :meth:`cut` and :meth:`restore`."""

    def __init__(self, target_host: str, target_port: int):
        self.target = (target_host, target_port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self._cut = False
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def cut(self) -> None:
        """Close every connection and refuse new ones (closed as soon as accepted)."""
        with self._lock:
            self._cut = True
            for sock in self._open:
                _shut(sock)
            self._open.clear()

    def restore(self) -> None:
        """Forward new connections again."""
        with self._lock:
            self._cut = False

    def close(self) -> None:
        """Stop listening and drop everything."""
        self.cut()
        self._closed = True
        self._listener.close()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                if self._cut:
                    _shut(client)
                    continue
            try:
                server = socket.create_connection(self.target, timeout=5)
            except OSError:
                _shut(client)
                continue
            with self._lock:
                self._open.update((client, server))
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            with self._lock:
                self._open.discard(source)
                self._open.discard(sink)
            _shut(source)
            _shut(sink)


def _shut(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    sock.close()


def free_port() -> int:
    """A loopback port nobody listens on (gunicorn binds it a moment later)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_gunicorn(env: dict[str, str], workers: int = 1, stderr=None) -> subprocess.Popen:
    """gunicorn with gunicorn.conf.py and ``env`` (TALLY_DATABASE_URL, TALLY_UPSTREAM_URL,
    TALLY_INSTANCE_PATH …) on a free port; ``proc.url`` once /healthz answers. Its log
    goes to ``stderr`` (a file), else nowhere."""
    port = free_port()
    full = {**os.environ, **env, "TALLY_BIND": f"127.0.0.1:{port}"}
    full["TALLY_WORKERS"] = str(workers)
    full.pop("TALLY_USAGE_WRITES", None)  # as in production: background writes
    # what a master exports to its own children, never inherited from another
    for name in ("TALLY_USAGE_SOCKET", "TALLY_LIMITS_DB"):
        full.pop(name, None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "--config", "gunicorn.conf.py", "wsgi:app"],
        cwd=ROOT,
        env=full,
        stdout=subprocess.DEVNULL,
        stderr=stderr or subprocess.DEVNULL,
    )
    proc.url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            requests.get(proc.url + "/healthz", timeout=5)
            return proc
        except requests.RequestException:
            if proc.poll() is not None or time.monotonic() > deadline:
                stop(proc)
                raise RuntimeError("gunicorn did not start") from None
            time.sleep(0.1)


def stop(proc: subprocess.Popen, timeout: float = 30) -> int:
    """SIGTERM (a graceful stop), SIGKILL if it takes longer than ``timeout``."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
    return proc.wait()


def writer_pids(master_pid: int) -> list[int]:
    """The usage writer processes among the children of gunicorn's master."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        if parent == master_pid and b"tally.usage.writer.process" in cmdline:
            found.append(int(entry.name))
    return found


@dataclass
class Load:
    """A steady stream of chat calls from ``threads`` clients until :meth:`stop`."""

    url: str
    key: str
    threads: int = 6
    stream: bool = False
    answers: list[tuple[int, str | None]] = field(default_factory=list)
    _stopping: threading.Event = field(default_factory=threading.Event)
    _workers: list[threading.Thread] = field(default_factory=list)

    def start(self) -> Load:
        """Begin sending."""
        for index in range(self.threads):
            thread = threading.Thread(target=self._run, args=(index,), daemon=True)
            thread.start()
            self._workers.append(thread)
        return self

    def stop(self) -> Load:
        """Stop sending and wait for the answers in flight."""
        self._stopping.set()
        for thread in self._workers:
            thread.join(60)
        return self

    def statuses(self) -> dict[int, int]:
        """How many answers had each status (0: no answer at all)."""
        counts: dict[int, int] = {}
        for status, _ in self.answers:
            counts[status] = counts.get(status, 0) + 1
        return counts

    def answered(self) -> list[str]:
        """The request ids of the 200 answers."""
        return [rid for status, rid in self.answers if status == 200 and rid]

    def _run(self, index: int) -> None:
        session = requests.Session()
        count = 0
        while not self._stopping.is_set():
            count += 1
            self.answers.append(self.call(session, f"user-{index}-{count % 7}"))

    def call(self, session: requests.Session, user: str) -> tuple[int, str | None]:
        """One call, read to its end: (status, X-Request-Id); status 0 when it broke."""
        body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
        if self.stream:
            body["stream"] = True
        try:
            response = session.post(
                self.url + "/v1/chat/completions",
                json=body,
                headers={"Authorization": f"Bearer {self.key}", "X-Tally-User": user},
                timeout=30,
                stream=self.stream,
            )
            content = response.content
        except requests.RequestException:
            return 0, None
        if self.stream and response.status_code == 200 and b"[DONE]" not in content:
            return 0, response.headers.get("X-Request-Id")
        return response.status_code, response.headers.get("X-Request-Id")


def wait_until(predicate: Callable[[], object], timeout: float, step: float = 0.1) -> object:
    """Poll ``predicate`` until truthy or ``timeout``; its last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(step)
