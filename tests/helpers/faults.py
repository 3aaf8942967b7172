"""The fault harness: a loopback TCP proxy a test can cut and restore, a steady load that
notes every answer's status and X-Request-Id, and a burst of concurrent calls. Tally
under gunicorn, which they run against, is started by tests.helpers.gunicorn.

The proxy stands between Tally and PostgreSQL (or Redis): cutting it closes every open
connection and refuses new ones at once, as a database that restarts or fails over
does, without ever touching the machine's servers. Also used by bench/chaos.py.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import requests

from tests.helpers.loopback import listener


class TcpProxy:
    """Forwards 127.0.0.1:<port> to ``target``; :meth:`cut` and :meth:`restore`."""

    def __init__(self, target_host: str, target_port: int):
        self.target = (target_host, target_port)
        self._listener = listener()
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
            answer = self.call(session, f"user-{index}-{count % 7}")
            self.answers.append(answer)
            if answer[0] == 0:  # nobody listens (a restart): try again in a moment
                self._stopping.wait(0.05)

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


def fire(url: str, key: str, users: list[str], total: int, threads: int = 24) -> list[int]:
    """``total`` chat requests at once from ``threads`` clients; their statuses."""
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}

    def one(index: int) -> int:
        headers = {"Authorization": f"Bearer {key}", "X-Tally-User": users[index % len(users)]}
        return requests.post(
            url + "/v1/chat/completions", json=body, headers=headers, timeout=30
        ).status_code

    with ThreadPoolExecutor(threads) as pool:
        return list(pool.map(one, range(total)))
