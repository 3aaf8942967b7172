"""The background usage writer: request rows committed in batches after the answers
have gone out, so nothing stands between the upstream's last byte and the client's."""

from __future__ import annotations

import atexit
import logging
import queue
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime
from typing import Any

from sqlalchemy.orm import sessionmaker

from tally.db import make_engine, make_session_factory, utcnow
from tally.services.usage import CallRecord, Outcome, record_calls
from tally.services.writer_socket import RemoteSink
from tally.settings import Settings

log = logging.getLogger(__name__)
_STOP = object()


class UsageWriter:
    """Writes request rows on a background thread, batched into one transaction each.

    Nothing then stands between the upstream's last byte and the client's: the row is
    queued when the answer ends, with the time the call ended, and committed a moment
    later. ``linger`` (50 ms at most) gathers a batch: one write per batch costs the
    request threads less CPU, and less waiting for the GIL, than one write per row.
    ``close`` (at exit: gunicorn's graceful shutdown ends in ``sys.exit``) writes
    whatever is still queued. A batch that fails is retried one row at a time, so one
    bad row cannot take others down with it.

    Under gevent the writer's thread is a greenlet on the worker's event loop, and the
    database calls would block that loop: a SQLite checkpoint's fsync or a slow commit
    stalled every request of the worker (docs/benchmarks.md).
    So each batch is written on a native thread (:func:`run_native`), while the queue
    and the batching stay on the loop. With a ``remote`` (a worker under gunicorn.conf.py)
    a batch is handed to the usage writer process instead, and written here only when
    that process cannot be reached.
    """

    def __init__(
        self,
        sessions: sessionmaker,
        max_batch: int = 500,
        linger: float = 0.05,
        remote: RemoteSink | None = None,
    ):
        self._sessions = sessions
        self._remote = remote
        self._max_batch = max_batch
        self._linger = linger
        self._queue: queue.Queue = queue.Queue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def submit(self, call: CallRecord, outcome: Outcome, ended: datetime | None = None) -> None:
        """Queue one call's row, ended now or at ``ended`` (the outcome is copied: the
        caller may keep its own)."""
        self._queue.put((call, replace(outcome), ended or utcnow()))
        if self._thread is None or not self._thread.is_alive():
            self._start()

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every row queued so far is committed (with a remote: handed over);
        False on timeout."""
        deadline = time.monotonic() + timeout
        with self._queue.all_tasks_done:
            while self._queue.unfinished_tasks:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._queue.all_tasks_done.wait(remaining)
        return True

    def close(self, timeout: float = 30.0) -> None:
        """Write what is queued and stop the thread."""
        if self._thread is not None and self._thread.is_alive():
            self._queue.put(_STOP)
            self._thread.join(timeout)

    def _start(self) -> None:
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                return
            self._thread = threading.Thread(target=self._run, name="tally-usage", daemon=True)
            self._thread.start()
            atexit.register(self.close)

    def _run(self) -> None:
        while True:
            batch = [self._queue.get()]
            if batch[0] is not _STOP:
                # One sleep per batch, then take what came meanwhile: a timed get per row
                # cost the request loop a timer and a switch for every row.
                time.sleep(self._linger)
            while len(batch) < self._max_batch and batch[-1] is not _STOP:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            stop = _STOP in batch
            calls = [item for item in batch if item is not _STOP]
            try:
                if calls and (self._remote is None or not self._remote.send(calls)):
                    run_native(self._write, calls)
            finally:
                for _ in batch:
                    self._queue.task_done()
            if stop:
                if self._remote is not None:
                    self._remote.close()
                return

    def _write(self, calls) -> None:
        with self._sessions() as session:
            try:
                record_calls(session, calls)
                return
            except Exception:
                session.rollback()
                log.warning("batch of %d request rows failed; writing one by one", len(calls))
        for item in calls:
            with self._sessions() as session:
                try:
                    record_calls(session, [item])
                except Exception:
                    session.rollback()
                    log.exception("could not record request %s", item[0].request_id)


def run_native(function: Callable[..., Any], *args: Any) -> Any:
    """``function(*args)`` on a native thread when gevent has patched threading (the
    calling greenlet waits; the event loop goes on serving requests), else right here."""
    if "gevent" in sys.modules:
        from gevent import get_hub, monkey

        if monkey.is_module_patched("threading"):
            return get_hub().threadpool.apply(function, args)
    return function(*args)


def build_usage_writer(settings: Settings) -> UsageWriter:
    """The background writer of a worker (``TALLY_USAGE_WRITES=background``).

    With ``settings.usage_socket`` (under gunicorn.conf.py) the batches go to the usage
    writer process (tally/services/writer_process.py), and are written here only when it
    cannot be reached. The writer has an engine of its own: its native thread then
    shares no connection pool (and no pool lock) with the request loop.
    """
    sessions = make_session_factory(make_engine(settings.database_url, pool_size=2))
    remote = RemoteSink(settings.usage_socket) if settings.usage_socket else None
    return UsageWriter(sessions, remote=remote)
