"""The usage writer in a process of its own, beside gunicorn's workers.

``gunicorn.conf.py`` starts it before the first worker and stops it after the last
(tally/usage/writer/supervisor.py). Each worker's :class:`UsageWriter` sends
its batches here over a Unix socket instead of writing them itself, so the batches'
Python work (SQLAlchemy building every row's parameters) runs on a core of its own. On
a thread inside a worker it shared the GIL with the request loop: requests that arrived
during a batch were the slow one percent (docs/benchmarks.md). If the socket cannot be
reached, a worker writes its batch itself, as it would without this process.

Frames are described in tally/usage/writer/wire.py; the socket lives in a private
directory (mode 0700) and is only ever spoken to by the workers of the same gunicorn.
The process builds only what writing rows needs (settings, an engine, a
:class:`UsageWriter`), not the web app: it imports no Flask, blueprint or upstream code.
It also reconciles the instance's estimated costs with the upstream's generation
endpoint (tally.usage.reconcile), and delivers the sinks' events (tally.sinks.delivery),
each on a thread of its own.
"""

from __future__ import annotations

import logging
import os
import queue
import shutil
import signal
import socketserver
import sys
import threading
import time

from tally.db import make_engine, make_session_factory
from tally.logs import configure_logging
from tally.settings import load_settings
from tally.sinks import outbox
from tally.sinks.delivery import start_deliverer
from tally.usage.reconcile import start_reconciler
from tally.usage.writer.background import UsageWriter, build_spool
from tally.usage.writer.wire import ACK, FRAME, MAX_FRAME, decode_batch
from tally.versions import make_version

log = logging.getLogger(__name__)


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
            # Acknowledged once committed or spooled (fsync'd), never before: a frame
            # the worker sees no ACK for is written again by the worker (replays are
            # idempotent), so a writer killed mid-batch loses nothing.
            if not self.server.batcher.write(items):
                return  # not written (logged): no ACK, the worker writes it itself
            self.wfile.write(ACK)
            self.wfile.flush()


class Batcher:
    """Writes the frames of every worker connection together: one transaction for what
    all of them sent meanwhile, not one per frame.

    A write costs about 1.5 ms whatever its size, plus each row's own work (bench
    numbers in docs/benchmarks.md): with each worker's frame written apart, that fixed
    part was a third of the process's CPU per row. The first frame waits up to
    ``linger`` for the others' (a worker's frame comes every 50 ms or so under load, so
    the wait is short against the worker's own), then everything queued goes in one
    :meth:`UsageWriter.write` (committed, or spooled, or one row at a time when the
    batch fails); each connection acknowledges its frame only after that.
    """

    def __init__(self, writer: UsageWriter, linger: float = 0.02, max_rows: int = 5000):
        self.writer, self.linger, self.max_rows = writer, linger, max_rows
        self._queue: queue.Queue = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="tally-batcher", daemon=True)
        self._thread.start()

    def write(self, items: list) -> bool:
        """Write ``items`` with whatever else is queued; True once they are committed or
        spooled, False when writing them raised (logged)."""
        frame = _Frame(items)
        self._queue.put(frame)
        frame.done.wait()
        return frame.written

    def close(self) -> None:
        """Write what is queued, then stop."""
        self._queue.put(None)
        self._thread.join()

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            frames, rows = [first], len(first.items)
            deadline = time.monotonic() + self.linger
            stop = False
            while rows < self.max_rows:
                try:
                    frame = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    break
                if frame is None:
                    stop = True
                    break
                frames.append(frame)
                rows += len(frame.items)
            self._write(frames)
            if stop:
                return

    def _write(self, frames: list[_Frame]) -> None:
        try:
            self.writer.write([item for frame in frames for item in frame.items])
            written = True
        except Exception:  # UsageWriter.write spools what the database refuses: a bug
            log.exception("a batch of %d usage frames could not be written", len(frames))
            written = False
        for frame in frames:
            frame.written = written
            frame.done.set()


class _Frame:
    """One connection's frame, waiting for the batch it went into."""

    __slots__ = ("items", "done", "written")

    def __init__(self, items: list):
        self.items, self.done, self.written = items, threading.Event(), False


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
    server.batcher = Batcher(writer)
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
        server.server_close()  # every connection's last frame is written by now
        server.batcher.close()
        writer.close()
        if writer.replayer is not None:
            writer.replayer.stop()
        shutil.rmtree(os.path.dirname(path), ignore_errors=True)


def main(corrections=None, alerts=None) -> None:
    """``python -m tally.usage.writer.process SOCKET INSTANCE_PATH``: the deployment's
    settings (the same environment and instance folder as the workers), an engine of its
    own and a background usage writer; nothing of the web app. ``corrections``: given
    the settings, where the reconciler's corrections go (tally.runtime.writer: the
    limits' counters); ``alerts``: given the settings and the sessions, what checks each
    written batch for limit alerts (tally.limits.alerts)."""
    socket_path, instance_path = sys.argv[1], sys.argv[2]
    settings = load_settings(instance_path)
    configure_logging(
        settings.log_format,
        [settings.upstream_api_key, settings.hash_key, settings.secret_key],
    )
    engine = make_engine(settings.database_url, pool_size=4)  # one per worker connection
    sessions = make_session_factory(engine)
    # a sink added or removed anywhere is seen by the next batch (the caches' version)
    outbox.watch(make_version(settings.instance_path, settings.ratelimit_storage_uri))
    on_written = alerts(settings, sessions) if alerts is not None else None
    writer = UsageWriter(sessions, spool=build_spool(settings), on_written=on_written)
    writer.replayer.start()  # what a previous writer (or a dead worker) spooled
    # one reconciler of estimated costs per instance (tally.usage.reconcile)
    on_reconciled = corrections(settings) if corrections is not None else None
    reconciler = start_reconciler(settings, sessions, on_reconciled)
    # one delivery loop of the sinks' outbox per instance (tally.sinks.delivery)
    deliverer = start_deliverer(sessions, settings.secret_key)
    try:
        serve(writer, socket_path)
    finally:
        deliverer.stop()
        if reconciler is not None:
            reconciler.stop()


if __name__ == "__main__":
    main()
