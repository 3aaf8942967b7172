"""The background usage writer: request rows committed in batches after the answers
have gone out, so nothing stands between the upstream's last byte and the client's."""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from datetime import datetime
from functools import partial
from pathlib import Path

from sqlalchemy.orm import sessionmaker

from tally.db import is_unavailable, make_engine, make_session_factory, run_native, utcnow
from tally.metrics import count_calls, count_usage_rows, set_queue_depth
from tally.settings import Settings
from tally.sinks.delivery import start_deliverer
from tally.usage.call import CallRecord, Outcome
from tally.usage.reconcile import Reconciler, start_reconciler
from tally.usage.records import record_calls
from tally.usage.writer.replay import Replayer
from tally.usage.writer.spool import Spool
from tally.usage.writer.wire import RemoteSink

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

    With a ``spool`` (tally/usage/writer/spool.py) a batch the database cannot take (down,
    cut off, locked) is kept on disk, and so is every batch after it until the spool is
    replayed: :class:`Replayer` retries with backoff, and also adopts what a process that
    is gone had spooled.
    """

    def __init__(
        self,
        sessions: sessionmaker,
        max_batch: int = 500,
        linger: float = 0.05,
        remote: RemoteSink | None = None,
        spool: Spool | None = None,
        reconciler: Callable[[], Reconciler | _Helpers | None] | None = None,
        on_written: Callable[[list], None] | None = None,
    ):
        self._sessions = sessions
        # given each committed batch, off the request path (the limits' alerts)
        self.on_written = on_written
        # started with the writer's thread (so an app that records nothing polls for
        # nothing) and stopped with it
        self._make_reconciler = reconciler
        self.reconciler: Reconciler | _Helpers | None = None
        self._remote = remote
        self.spool = spool
        self.replayer = Replayer(self) if spool is not None else None
        self._max_batch = max_batch
        self._linger = linger
        # calls, a flush's marker (an Event set once what came before it is written),
        # _STOP. A deque, not a queue.Queue: a put took a lock and notified a condition on
        # every call (under gevent, Python-level locks); an append is atomic, and the
        # writer is woken only when it sleeps (``_idle``).
        self._pending: deque = deque()
        self._idle = False
        self._wake = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        # whether the thread runs in this process: checked on every submit instead of
        # Thread.is_alive, which under gevent yields to the hub on every call
        self._running_in: int | None = None

    def submit(self, call: CallRecord, outcome: Outcome, ended: datetime | None = None) -> None:
        """Queue one call's row, ended now or at ``ended`` (the outcome is copied: the
        caller may keep its own)."""
        self._pending.append((call, outcome.copy(), ended or utcnow()))
        if self._idle:  # read after the append: the writer re-checks after setting it
            self._idle = False
            self._wake.set()
        if self._running_in != os.getpid():  # not started, stopped, or a forked copy
            self._start()

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every row queued so far is committed (with a remote: handed over);
        False on timeout."""
        if self._running_in != os.getpid() and not self._pending:
            return True  # no writer here, nothing waiting for one
        written = threading.Event()
        self._push(written)
        return written.wait(timeout)

    def wake_deliveries(self) -> None:
        """Under gunicorn the usage writer process delivers all along; otherwise this
        writer's helpers do, started with its thread: started now if no call has been."""
        if self._make_reconciler is not None:
            self._start()

    def close(self, timeout: float = 30.0) -> None:
        """Write what is queued and stop the thread."""
        if self._thread is not None and self._thread.is_alive():
            self._push(_STOP)
            self._thread.join(timeout)
        if self.reconciler is not None:
            self.reconciler.stop()

    def _push(self, item) -> None:
        """Queue a marker or _STOP, waking the writer (started if need be)."""
        self._pending.append(item)
        self._idle = False
        self._wake.set()
        if self._running_in != os.getpid():
            self._start()

    def _start(self) -> None:
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                return
            self._thread = threading.Thread(target=self._run, name="tally-usage", daemon=True)
            self._running_in = os.getpid()
            self._thread.start()
            if self._make_reconciler is not None and self.reconciler is None:
                self.reconciler = self._make_reconciler()
            atexit.register(self.close)

    def _run(self) -> None:
        try:
            self._loop()
        finally:
            self._running_in = None  # the next submit starts another

    def _loop(self) -> None:
        pending = self._pending
        while True:
            if not pending:
                self._idle = True
                if not pending:  # checked again after saying so: no submit goes unseen
                    self._wake.wait()
                self._wake.clear()
                self._idle = False
                continue
            if type(pending[0]) is tuple:
                # One sleep per batch, then take what came meanwhile: a timed get per row
                # cost the request loop a timer and a switch for every row.
                time.sleep(self._linger)
            calls, markers, stop = [], [], False
            while pending and len(calls) < self._max_batch and not stop:
                item = pending.popleft()
                if type(item) is tuple:
                    calls.append(item)
                elif item is _STOP:
                    stop = True
                else:
                    markers.append(item)
            count_calls(calls)
            if self._remote is not None:  # a worker (gunicorn marks it dead when it exits)
                set_queue_depth(len(pending))
            try:
                if calls and (self._remote is None or not self._remote.send(calls)):
                    run_native(self.write, calls)
            finally:
                for marker in markers:
                    marker.set()
            if stop:
                if self._remote is not None:
                    self._remote.close()
                return

    def write(self, calls) -> None:
        """Write ``calls`` now, on this thread: committed, or spooled when the database
        cannot take them. During an outage (from a failed write until the replayer
        reaches the database again) batches go straight to the spool: none waits for a
        connection attempt. The spool keeps its own order; rows that come after the
        outage may be committed before the last spooled ones (each row carries the time
        its call ended)."""
        if self.replayer is not None and self.replayer.in_outage:
            self._keep(calls)
            return
        try:
            self.write_strict(calls)
            if self.on_written is not None:
                self.on_written(calls)
            return
        except Exception as exc:
            if is_unavailable(exc):
                self._keep(calls, exc)
                return
            log.warning("batch of %d request rows failed; writing one by one", len(calls))
        for item in calls:
            try:
                self.write_strict([item])
            except Exception as exc:
                if is_unavailable(exc):
                    self._keep([item], exc)
                else:
                    log.exception("could not record request %s", item[0].request_id)

    def write_strict(self, calls) -> None:
        """Commit ``calls`` in one transaction; raise whatever the database raises."""
        with self._sessions() as session:
            try:
                record_calls(session, calls)
            except Exception:
                session.rollback()
                raise

    def _keep(self, calls, error: BaseException | None = None) -> None:
        """Spool ``calls``; without a spool, or with a full one, they are lost: say so."""
        if self.spool is not None and self.spool.append(calls):
            count_usage_rows(spooled=len(calls))
            if error is not None and self.replayer is not None:
                self.replayer.note_outage(error)
            return
        count_usage_rows(lost=len(calls))
        for call, _outcome, _ended in calls:
            log.error("could not record request %s (%s)", call.request_id, error)


def build_spool(settings: Settings) -> Spool:
    """The instance folder's usage spool (shared by every process of one box)."""
    return Spool(Path(settings.instance_path, "usage-spool"), settings.spool_max_bytes)


def build_usage_writer(settings: Settings, on_reconciled=None, on_written=None) -> UsageWriter:
    """The background writer of a worker (``TALLY_USAGE_WRITES=background``).

    With ``settings.usage_socket`` (under gunicorn.conf.py) the batches go to the usage
    writer process (tally/usage/writer/process.py), and are written here only when it
    cannot be reached. The writer has an engine of its own: its native thread then
    shares no connection pool (and no pool lock) with the request loop.
    """
    sessions = make_session_factory(make_engine(settings.database_url, pool_size=2))
    remote = RemoteSink(settings.usage_socket) if settings.usage_socket else None
    # no usage writer process to reconcile estimated costs: this writer does it
    # (``on_reconciled``: the limits' counters, tally.usage.reconcile.reconcile_pass)
    # and delivers the sinks' events (tally.sinks.delivery)
    reconciler = None if remote else partial(_start_helpers, settings, sessions, on_reconciled)
    writer = UsageWriter(
        sessions,
        remote=remote,
        spool=build_spool(settings),
        reconciler=reconciler,
        on_written=on_written(sessions) if on_written is not None and not remote else None,
    )
    writer.replayer.start()  # rows spooled by a process before this one
    return writer


class _Helpers:
    """The threads a writer without a writer process runs beside it: the reconciler of
    estimated costs (none for the demo upstream) and the sinks' delivery loop."""

    def __init__(self, *threads):
        self.threads = [thread for thread in threads if thread is not None]

    def stop(self, timeout: float = 5.0) -> None:
        """Stop each after its current pass."""
        for thread in self.threads:
            thread.stop(timeout)


def _start_helpers(settings: Settings, sessions, on_reconciled) -> _Helpers:
    reconciler = start_reconciler(settings, sessions, on_reconciled)
    return _Helpers(reconciler, start_deliverer(sessions, settings.secret_key))
