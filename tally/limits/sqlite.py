"""``tally+sqlite:///path/limits.db``: the limit counters of one instance in a SQLite file
that every worker opens, so a limit holds exactly across all of them with no process in
between.

gunicorn's master makes the file's private directory before the first worker forks
(tally/limits/counter_file.py, from ``gunicorn.conf.py``) and removes it at exit. Each worker runs a
whole admission (every test and hit of a request) in one transaction, so it is atomic
across processes: the engine enters :attr:`SQLiteStorage.lock`, which takes an exclusive
``flock`` on a lock file beside the database and then ``BEGIN IMMEDIATE``. The ``flock``
is what makes the wait short: a process blocked on it is woken the moment the holder lets
go, where SQLite's own busy handler would sleep a millisecond or more.

It replaces a counter server (a process the workers asked over a Unix socket): no
process to start, watch or lose (docs/architecture.md, docs/benchmarks.md). The tables
and their SQL are in :mod:`tally.limits.sqlite_sql`; stale hits and idle keys go in a
sweep of the next batch of keys, at most every ``SWEEP_EVERY`` seconds per process.
"""

from __future__ import annotations

import collections
import fcntl
import os
import sqlite3
import threading
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote, urlparse

from limits.storage import MovingWindowSupport, Storage

from tally.limits.sqlite_sql import (
    ADD_HITS,
    BATCH_END,
    COUNTER,
    INCR,
    LIVE_HITS,
    NEW_WINDOW,
    SCHEMA,
    SWEEP_BATCH,
    SWEEPS,
    WINDOW_STATS,
)
from tally.limits.storage import wall_clock

SWEEP_EVERY = 0.2  # seconds between two sweep batches of one process


class SQLiteStorage(Storage, MovingWindowSupport):
    """Counters and moving windows in a SQLite file shared by the processes of one
    instance. Safe for the greenlets and threads of a process (they take turns on its
    connection) and across processes (see the module)."""

    STORAGE_SCHEME = ["tally+sqlite"]

    def __init__(self, uri: str | None = None, clock: Callable[[], float] | None = None, **_: Any):
        super().__init__(uri, wrap_exceptions=False)
        self.path = unquote(urlparse(uri or "").path)
        self.clock = clock or wall_clock
        self._guard = threading.RLock()
        self._depth = 0
        self._pid = -1
        self._conn: sqlite3.Connection | None = None
        self._lock_file = None
        self._next_sweep = 0.0
        self._cursors = {"counters": "", "windows": ""}
        self._transaction = _Transaction(self)
        # this transaction's moving windows as last read: key -> (id, expiry, live hits);
        # an admission reads a window's stats and then hits it: the hit needs no re-read
        self._seen: dict[str, tuple[int | None, float, int]] = {}

    @property
    def base_exceptions(self) -> tuple[type[Exception], ...]:
        """The file is gone, unreadable or locked up."""
        return (sqlite3.Error, OSError)

    @property
    def lock(self) -> _Transaction:
        """One transaction across every process of the instance; re-entrant, so the
        storage calls an admission makes join it."""
        return self._transaction

    def _begin(self) -> None:
        self._guard.acquire()
        if self._depth:
            self._depth += 1
            return
        try:
            conn = self._connection()
            fcntl.flock(self._lock_file, fcntl.LOCK_EX)
        except BaseException:
            self._guard.release()
            raise
        self._depth = 1
        self._seen.clear()
        try:
            conn.execute("BEGIN IMMEDIATE")
        except BaseException:
            self._end(failed=True)
            raise

    def _end(self, failed: bool) -> None:
        try:
            if self._depth == 1:
                conn = self._conn
                try:
                    if not failed:
                        self._sweep(conn)
                        conn.execute("COMMIT")
                finally:
                    try:
                        if conn.in_transaction:  # failed, or the commit did
                            conn.execute("ROLLBACK")
                    finally:
                        fcntl.flock(self._lock_file, fcntl.LOCK_UN)
        finally:
            self._depth -= 1
            self._guard.release()

    def _connection(self) -> sqlite3.Connection:
        """This process's connection (a forked child opens its own)."""
        if self._conn is None or self._pid != os.getpid():
            self._lock_file = open(self.path + ".lock", "a")  # noqa: SIM115  (held open)
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            fcntl.flock(self._lock_file, fcntl.LOCK_EX)
            try:
                conn.execute("PRAGMA journal_mode=WAL")
                for statement in SCHEMA:
                    conn.execute(statement)
            finally:
                fcntl.flock(self._lock_file, fcntl.LOCK_UN)
            # Counters are rebuilt from the request log when lost: no fsync is worth it.
            conn.execute("PRAGMA synchronous=OFF")
            self._conn, self._pid = conn, os.getpid()
        return self._conn

    def _one(self, sql: str, params: tuple | dict = ()) -> tuple | None:
        with self.lock:
            return self._conn.execute(sql, params).fetchone()

    def incr(self, key: str, expiry: float, amount: int = 1) -> int:
        """Add ``amount``; a new (or expired) counter expires ``expiry`` seconds from now."""
        now = self.clock()
        row = self._one(INCR, {"key": key, "amount": amount, "now": now, "expiry": expiry})
        return int(row[0])

    def get(self, key: str) -> int:
        """The counter's value (0 when missing or expired)."""
        row = self._one(COUNTER, (key, self.clock()))
        return int(row[0]) if row else 0

    def get_expiry(self, key: str) -> float:
        """When the counter expires (now when it does not exist)."""
        now = self.clock()
        row = self._one(
            "SELECT expires_at FROM counters WHERE key = ? AND expires_at > ?", (key, now)
        )
        return float(row[0]) if row else now

    def check(self) -> bool:
        """True when the file can be read."""
        try:
            self._one("SELECT 1")
        except (sqlite3.Error, OSError):
            return False
        return True

    def reset(self) -> int:
        """Forget everything; the number of keys forgotten."""
        with self.lock:
            self._seen.clear()
            conn = self._conn
            count = conn.execute(
                "SELECT (SELECT count(*) FROM counters) + (SELECT count(*) FROM windows)"
            ).fetchone()[0]
            for table in ("counters", "windows", "hits"):
                conn.execute(f"DELETE FROM {table}")  # noqa: S608  (our own table names)
        return int(count)

    def clear(self, key: str) -> None:
        """Forget one key (counter or window)."""
        with self.lock:
            self._seen.pop(key, None)
            conn = self._conn
            conn.execute("DELETE FROM counters WHERE key = ?", (key,))
            row = conn.execute("SELECT id FROM windows WHERE key = ?", (key,)).fetchone()
            if row:
                conn.execute("DELETE FROM hits WHERE window = ?", row)
                conn.execute("DELETE FROM windows WHERE id = ?", row)

    def acquire_entry(self, key: str, limit: int, expiry: int, amount: int = 1) -> bool:
        """Record ``amount`` hits now if the window holds room for them."""
        now = self.clock()
        with self.lock:
            seen = self._seen.get(key)
            if seen is not None and seen[1] == expiry:  # read in this transaction: as is
                window, count = seen[0], seen[2]  # (a window only loses hits as time goes)
            else:
                window, count = None, -1
            if window is None:
                window, count = self._live(key, expiry, now)
            if amount > limit or count + amount > limit:
                return False
            self._conn.execute(ADD_HITS, (window, now, amount))
            self._seen[key] = (window, expiry, count + amount)
        return True

    def get_moving_window(self, key: str, limit: int, expiry: int) -> tuple[float, int]:
        """(oldest hit still in the window, hits in the window); (now, 0) when empty."""
        now = self.clock()
        with self.lock:
            window, count, oldest = self.window_stats(key, now - expiry)
            self._seen[key] = (window, expiry, count)
        return (oldest, count) if count else (now, 0)

    def window_stats(self, key: str, since: float) -> tuple[int | None, int, float]:
        """(the window's id or None, its hits at or after ``since``, the oldest of them);
        inside :attr:`lock`."""
        window, count, oldest = self._conn.execute(
            WINDOW_STATS, {"since": since, "key": key}
        ).fetchone()
        return window, int(count), float(oldest) if count else 0.0

    def add_hit(self, key: str, window: int | None, expiry: float, now: float) -> None:
        """One hit at ``now`` in the window (made when ``window`` is None); inside
        :attr:`lock`."""
        conn = self._conn
        if window is None:
            window = conn.execute(NEW_WINDOW, (key, expiry)).fetchone()[0]
        conn.execute(ADD_HITS, (window, now, 1))

    def counter(self, key: str, now: float) -> int:
        """A counter's value at ``now`` (0 when missing or expired); inside :attr:`lock`."""
        row = self._conn.execute(COUNTER, (key, now)).fetchone()
        return int(row[0]) if row else 0

    def seed_entries(self, key: str, stamps: list[float], expiry: int) -> None:
        """Put hits back at the times they were made (counters rebuilt after a restart)."""
        now = self.clock()
        live = [s for s in stamps if s >= now - expiry]
        with self.lock:
            self._seen.pop(key, None)
            window, _ = self._live(key, expiry, now)
            counts = collections.Counter(live)
            rows = [(window, stamp, n) for stamp, n in counts.items()]
            self._conn.executemany(ADD_HITS, rows)

    def size(self) -> int:
        """Keys held (counters and windows)."""
        row = self._one("SELECT (SELECT count(*) FROM counters) + (SELECT count(*) FROM windows)")
        return int(row[0])

    def _live(self, key: str, expiry: float, now: float) -> tuple[int, int]:
        """The window's id (made if new) and its live hits' count (a hit exactly one window
        old still counts, as in ``limits``' own storages; older ones go in the sweep)."""
        conn = self._conn
        row = conn.execute("SELECT id FROM windows WHERE key = ?", (key,)).fetchone()
        if row is None:
            return conn.execute(NEW_WINDOW, (key, expiry)).fetchone()[0], 0
        count = conn.execute(LIVE_HITS, (row[0], now - expiry)).fetchone()
        return row[0], int(count[0])

    def _sweep(self, conn: sqlite3.Connection) -> None:
        """Drop expired counters, stale hits and empty windows among the next batch of
        keys, in a few set-wise statements (inside a transaction already open, at most
        every SWEEP_EVERY seconds in this process)."""
        now = self.clock()
        if now < self._next_sweep:
            return
        self._next_sweep = now + SWEEP_EVERY
        for table, statements in SWEEPS.items():
            after = self._cursors[table]
            last = conn.execute(BATCH_END[table], (after, SWEEP_BATCH)).fetchone()[0]
            if last is None:  # past the end: start over next time
                self._cursors[table] = ""
                continue
            for statement in statements:
                conn.execute(statement, {"after": after, "last": last, "now": now})
            self._cursors[table] = last


class _Transaction:
    """``with storage.lock:`` (a plain class: entered several times per admission)."""

    __slots__ = ("_storage",)

    def __init__(self, storage: SQLiteStorage):
        self._storage = storage

    def __enter__(self) -> None:
        self._storage._begin()

    def __exit__(self, kind, value, traceback) -> None:
        self._storage._end(failed=kind is not None)
