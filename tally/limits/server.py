"""The counter server: one :class:`~tally.limits.storage.LocalStorage` for every worker
of one instance, reached over a Unix socket (``tally+unix://``).

gunicorn's master starts it before the first worker (:func:`start`, from
``gunicorn.conf.py``) and exports its socket as ``TALLY_LIMITS_SOCKET``; it stops after
the last worker. One thread serves every connection with a selector, so each request
(a storage call or a whole admission plan) runs alone: exact whatever the worker count,
with no lock held across a network round trip. Frames are a 4-byte length and JSON.
"""

from __future__ import annotations

import json
import logging
import os
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any

from tally.limits.engine import add_usage, evaluate
from tally.limits.storage import FRAME, MAX_FRAME, LocalStorage
from tally.settings import LIMITS_SOCKET_ENV, child_environment, export_limits_socket

log = logging.getLogger(__name__)
SOCKET_ENV = LIMITS_SOCKET_ENV
OPS = frozenset(
    {"incr", "get", "get_expiry", "check", "reset", "clear", "acquire_entry"}
    | {"get_moving_window", "seed_entries"}
)


def handle(storage: LocalStorage, frame: bytes) -> bytes:
    """Run one request on ``storage``; its answer as JSON (errors as ``{"error": …}``),
    or nothing for a request sent without waiting (``add_usage``)."""
    try:
        op, *args = json.loads(frame)
        if op == "evaluate":
            answer: Any = evaluate(storage, args[0])
        elif op == "add_usage":
            add_usage(storage, args[0])
            return b""  # the client did not wait: no answer
        elif op in OPS:
            answer = getattr(storage, op)(*args)
        else:
            answer = {"error": f"unknown operation {op!r}"}
    except Exception as exc:  # a bad request must not take the server down
        log.exception("counter server: request failed")
        answer = {"error": f"{type(exc).__name__}: {exc}"}
    data = json.dumps(answer, separators=(",", ":")).encode()
    return FRAME.pack(len(data)) + data


def serve(path: str, storage: LocalStorage, stop: threading.Event | None = None) -> None:
    """Answer requests on ``path`` until ``stop`` is set."""
    stop = stop or threading.Event()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    # Bound and listening under another name, then renamed: whoever sees ``path`` can
    # connect (start() and the tests wait for it to appear).
    pending = path + ".new"
    listener.bind(pending)
    os.chmod(pending, 0o600)
    listener.listen(1024)
    os.rename(pending, path)
    listener.setblocking(False)
    selector = selectors.DefaultSelector()
    selector.register(listener, selectors.EVENT_READ, None)
    try:
        while not stop.is_set():
            for key, _ in selector.select(timeout=0.5):
                if key.data is None:
                    _accept(listener, selector)
                else:
                    _serve_ready(key.fileobj, key.data, storage, selector)
    finally:
        for key in list(selector.get_map().values()):
            key.fileobj.close()
        selector.close()


def _accept(listener: socket.socket, selector: selectors.BaseSelector) -> None:
    try:
        conn, _ = listener.accept()
    except BlockingIOError:
        return
    conn.setblocking(False)
    selector.register(conn, selectors.EVENT_READ, bytearray())


def _serve_ready(conn, buffer: bytearray, storage, selector) -> None:
    try:
        chunk = conn.recv(1 << 16)
    except BlockingIOError:
        return
    except OSError:
        chunk = b""
    if chunk:
        buffer += chunk
        try:
            while len(buffer) >= FRAME.size:
                (size,) = FRAME.unpack_from(buffer)
                if size > MAX_FRAME:
                    raise ValueError("frame too large")
                if len(buffer) < FRAME.size + size:
                    return
                frame = bytes(buffer[FRAME.size : FRAME.size + size])
                del buffer[: FRAME.size + size]
                # Clients wait for each answer before the next request: a small answer
                # always fits the socket's buffer, so this never blocks.
                answer = handle(storage, frame)
                if answer:
                    conn.sendall(answer)
            return
        except (OSError, ValueError):
            pass
    selector.unregister(conn)
    conn.close()


def main() -> None:
    """``python -m tally.limits.server SOCKET``: serve until SIGTERM or until the
    parent (gunicorn's master) is gone."""
    logging.basicConfig(level=logging.INFO)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    parent = os.getppid()

    def watch_parent() -> None:
        while not stop.wait(1.0):
            if os.getppid() != parent:
                log.error("gunicorn's master is gone; the counter server stops")
                stop.set()

    threading.Thread(target=watch_parent, daemon=True).start()
    serve(sys.argv[1], LocalStorage(), stop)


class ServerProcess:
    """The counter server as gunicorn's master sees it."""

    def __init__(self, proc: subprocess.Popen, directory: str):
        self.proc, self.directory = proc, directory
        self.path = os.path.join(directory, "limits.sock")

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, wait, clean up."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.directory, ignore_errors=True)


def start(cwd: str | None = None, timeout: float = 30.0) -> ServerProcess | None:
    """Start the counter server and export its socket to the workers forked after this.
    None, with an error logged, when it does not come up: each worker then counts in
    its own memory (limits multiplied by the worker count) and says so in the log."""
    directory = tempfile.mkdtemp(prefix="tally-limits-")  # mode 0700
    path = os.path.join(directory, "limits.sock")
    env = child_environment(SOCKET_ENV)
    proc = subprocess.Popen([sys.executable, "-m", "tally.limits.server", path], cwd=cwd, env=env)
    server = ServerProcess(proc, directory)
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if proc.poll() is not None or time.monotonic() > deadline:
            log.error("counter server did not start; limits are per worker")
            server.stop(timeout=5)
            return None
        time.sleep(0.02)
    export_limits_socket(path)
    return server


if __name__ == "__main__":
    main()
