"""The replayer of a usage writer's spool: once the database answers again, what was kept
on disk during an outage is written, and what a process that is gone had spooled is
adopted (tally/usage/writer/spool.py)."""

from __future__ import annotations

import logging
import threading
import time
from typing import Protocol

from tally.db import is_unavailable, run_native
from tally.usage.writer.spool import Spool

log = logging.getLogger(__name__)


class SpoolingWriter(Protocol):
    """What the replayer needs of its writer (tally.usage.writer.background.UsageWriter)."""

    spool: Spool

    def write_strict(self, calls) -> None:
        """Commit ``calls`` in one transaction; raise whatever the database raises."""


class Replayer:
    """Replays a writer's spool once the database answers again: tries after 0.5 s, then
    doubles the wait up to 2 s while it still fails (an attempt costs one connection
    try); looks for orphaned segments every 5 s when idle. One log line when an outage
    begins, one when the spool is drained."""

    FIRST, LONGEST, IDLE = 0.5, 2.0, 5.0

    def __init__(self, writer: SpoolingWriter):
        self._writer = writer
        self._wake = threading.Event()
        self._stopped = False
        self._outage_since: float | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Run in the background (a greenlet under gevent; the writes go native)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="tally-replay", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """Stop after the current attempt."""
        self._stopped = True
        self._wake.set()

    @property
    def in_outage(self) -> bool:
        """Whether a write failed and the database has not been reached since."""
        return self._outage_since is not None

    def note_outage(self, error: BaseException) -> None:
        """A batch was spooled because of ``error``: log it once per outage, replay soon."""
        if self._outage_since is None:
            self._outage_since = time.monotonic()
            log.error("database unavailable (%s); usage rows go to the spool", _brief(error))
        self.start()

    def _run(self) -> None:
        delay = self.FIRST
        while not self._stopped:
            self._wake.wait(delay if self._writer.spool.pending() else self.IDLE)
            self._wake.clear()
            if self._stopped:
                continue
            if not self._writer.spool.pending():
                self._outage_since = None  # nothing kept (a full spool): try the database
                continue
            started = time.monotonic()
            since = self._outage_since or started
            try:
                rows = run_native(self._writer.spool.drain, self._replay)
            except Exception as exc:
                if not is_unavailable(exc):
                    log.exception("usage spool replay failed")
                delay = min(delay * 2, self.LONGEST)
                continue
            delay = self.FIRST
            if rows:
                log.warning(
                    "usage spool replayed: %d rows in %.1f s (%.1f s after the outage began)",
                    rows,
                    time.monotonic() - started,
                    time.monotonic() - since,
                )
            self._outage_since = None

    def _replay(self, calls) -> None:
        """Write replayed rows; once one batch went in, the database answers: new batches
        go to it directly again instead of queueing behind the rest of the spool."""
        self._writer.write_strict(calls)
        self._outage_since = None


def _brief(error: BaseException) -> str:
    """The error's class and first line: an outage's log line, not its stack trace."""
    text = str(getattr(error, "orig", None) or error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}"
