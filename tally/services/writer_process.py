"""The usage writer in a process of its own, beside gunicorn's workers.

``gunicorn.conf.py`` starts it before the first worker (:func:`start`) and stops it
after the last (:meth:`WriterProcess.stop`). Each worker's :class:`UsageWriter` sends
its batches here over a Unix socket instead of writing them itself, so the batches'
Python work (SQLAlchemy building every row's parameters) runs on a core of its own. On
a thread inside a worker it shared the GIL with the request loop: requests that arrived
during a batch were the slow one percent (docs/benchmarks.md). If the socket cannot be
reached, a worker writes its batch itself, as it would without this process.

Frames are a 4-byte length and a JSON array of calls; the socket lives in a private
directory (mode 0700) and is only ever spoken to by the workers of the same gunicorn.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import socket
import socketserver
import struct
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime

from tally.identity import EndUserClaim
from tally.services.usage import CallRecord, Outcome

log = logging.getLogger(__name__)
FRAME = struct.Struct("!I")
MAX_FRAME = 64 * 1024 * 1024
SOCKET_ENV = "TALLY_USAGE_SOCKET"

Item = tuple[CallRecord, Outcome, datetime]


def encode_batch(items: list[Item]) -> bytes:
    """A batch of finished calls as one frame."""
    rows = []
    for call, outcome, ended in items:
        claim = call.claim
        rows.append(
            [
                call.request_id,
                call.api_key_id,
                None if claim is None else [claim.external_id, claim.source, claim.profile],
                call.identifier,
                call.revision_id,
                call.model,
                call.stream,
                call.is_demo,
                call.endpoint,
                outcome.status,
                outcome.error_code,
                outcome.error_message,
                outcome.usage,
                outcome.generation_id,
                outcome.model,
                outcome.latency_ms,
                outcome.ttft_ms,
                ended.isoformat(),
            ]
        )
    data = json.dumps(rows, separators=(",", ":"), default=str).encode()
    return FRAME.pack(len(data)) + data


def decode_batch(data: bytes) -> list[Item]:
    """The calls of one frame's payload (the length already taken off)."""
    items = []
    for row in json.loads(data):
        (request_id, key_id, claim, identifier, revision_id, model, stream, is_demo) = row[:8]
        endpoint = row[8]
        (status, code, message, usage, generation_id, answered_by, latency, ttft) = row[9:17]
        call = CallRecord(
            request_id=request_id,
            api_key_id=key_id,
            claim=None if claim is None else EndUserClaim(*claim),
            identifier=identifier,
            revision_id=revision_id,
            model=model,
            stream=stream,
            is_demo=is_demo,
            endpoint=endpoint,
        )
        outcome = Outcome(
            status=status,
            error_code=code,
            error_message=message,
            usage=usage,
            generation_id=generation_id,
            model=answered_by,
            latency_ms=latency,
            ttft_ms=ttft,
        )
        items.append((call, outcome, datetime.fromisoformat(row[17])))
    return items


class RemoteSink:
    """A worker's connection to the writer process (under gevent, a cooperative one)."""

    RETRY_AFTER = 5.0  # seconds without trying again once the process could not be reached

    def __init__(self, path: str):
        self.path = path
        self._sock: socket.socket | None = None
        self._retry_at = 0.0

    def send(self, items: list[Item]) -> bool:
        """Hand ``items`` over; False when the writer process cannot take them (the
        caller then writes them itself). A frame cut short is dropped by the reader."""
        if self._sock is None and time.monotonic() < self._retry_at:
            return False
        try:
            if self._sock is None:
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                sock.settimeout(10)
                sock.connect(self.path)
                self._sock = sock
                if self._retry_at:
                    log.warning("usage writer process reachable again")
                    self._retry_at = 0.0
            self._sock.sendall(encode_batch(items))
            return True
        except OSError as exc:
            if not self._retry_at:
                log.error(
                    "usage writer process unreachable (%s); this worker writes its own rows", exc
                )
            self._retry_at = time.monotonic() + self.RETRY_AFTER
            self.close()
            return False

    def close(self) -> None:
        """Drop the connection."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None


class _Handler(socketserver.StreamRequestHandler):
    """One worker's connection: read frames until the worker hangs up."""

    def handle(self) -> None:
        """Queue every call of every complete frame with the process's writer."""
        while True:
            head = self.rfile.read(FRAME.size)
            if len(head) < FRAME.size:
                return
            (size,) = FRAME.unpack(head)
            if size > MAX_FRAME:
                log.error("usage frame of %d bytes refused", size)
                return
            data = self.rfile.read(size)
            if len(data) < size:
                return
            try:
                items = decode_batch(data)
            except (ValueError, TypeError):
                log.exception("unreadable usage frame; the connection is closed")
                return
            for call, outcome, ended in items:
                self.server.writer.submit(call, outcome, ended)


class _Server(socketserver.ThreadingUnixStreamServer):
    # Closing waits for every connection's thread: at shutdown the workers are gone, and
    # their last frames must be queued before the writer writes its queue and stops.
    daemon_threads = False
    block_on_close = True


def serve(writer, path: str) -> None:
    """Take batches on ``path`` and queue them with ``writer`` until SIGTERM (or until
    the parent, gunicorn's master, is gone); then write what is queued and return."""
    server = _Server(path, _Handler)
    os.chmod(path, 0o600)
    server.writer = writer
    parent = os.getppid()
    stopping = threading.Event()

    def stop(*_args) -> None:
        if not stopping.is_set():
            stopping.set()
            threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)

    def watch_parent() -> None:
        while not stopping.wait(1.0):
            if os.getppid() != parent:
                log.error("gunicorn's master is gone; the usage writer stops")
                stop()

    threading.Thread(target=watch_parent, daemon=True).start()
    try:
        server.serve_forever(poll_interval=0.5)
    finally:
        server.server_close()
        writer.close()
        shutil.rmtree(os.path.dirname(path), ignore_errors=True)


def main() -> None:
    """``python -m tally.services.writer_process SOCKET``: the app's own settings and
    database (the same environment as the workers), its background usage writer."""
    from app import create_app  # the composition root: settings, engine, writer
    from tally.services.writer import usage_writer

    os.environ.pop(SOCKET_ENV, None)
    os.environ["TALLY_USAGE_WRITES"] = "background"
    gateway = create_app().extensions["tally"]
    serve(usage_writer(gateway.sessions), sys.argv[1])


class WriterProcess:
    """The writer process as gunicorn's master sees it."""

    def __init__(self, proc: subprocess.Popen, directory: str):
        self.proc, self.directory = proc, directory
        self.path = os.path.join(directory, "usage.sock")

    def stop(self, timeout: float = 60.0) -> None:
        """SIGTERM, wait for the queue to be written, then clean up."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                log.error("usage writer process did not stop in %ss; killed", timeout)
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.directory, ignore_errors=True)


def start(cwd: str | None = None, timeout: float = 30.0) -> WriterProcess | None:
    """Start the writer process and export its socket to the workers forked after this
    (``TALLY_USAGE_SOCKET``). None, with an error logged, when it does not come up:
    the workers then write their own rows."""
    directory = tempfile.mkdtemp(prefix="tally-usage-")  # mode 0700
    path = os.path.join(directory, "usage.sock")
    env = {k: v for k, v in os.environ.items() if k != SOCKET_ENV}
    proc = subprocess.Popen(
        [sys.executable, "-m", "tally.services.writer_process", path], cwd=cwd, env=env
    )
    writer = WriterProcess(proc, directory)
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if proc.poll() is not None or time.monotonic() > deadline:
            log.error("usage writer process did not start; workers write their own rows")
            writer.stop(timeout=5)
            return None
        time.sleep(0.05)
    os.environ[SOCKET_ENV] = path
    return writer


if __name__ == "__main__":
    main()
