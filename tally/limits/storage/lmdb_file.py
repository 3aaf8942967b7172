"""``tally+lmdb:///path/limits``: the limit counters of one instance in an LMDB file that
every worker maps into memory, so a limit holds exactly across all of them with no
process in between.

LMDB (the ``lmdb`` package) is a B+tree in a memory-mapped file: a read is a memory
load; a write transaction copies the pages it changes and commits by switching a root
page; writers take turns on a mutex in the lock file's shared memory, held for a few
microseconds. Each worker runs a whole admission (every test and hit of a request) in one
write transaction (:attr:`LMDBStorage.lock`), so it is atomic across processes. A worker
killed mid-transaction leaves the last committed state, and the mutex passes on (LMDB's
robust mutexes).

Sub-databases ``counters`` (value, expiry: ``<qd``), ``windows`` (length, then the
live hits' timestamps ascending: 8 bytes a hit) and ``holds`` (the reservations of calls
in flight: until, amount, call id, as doubles, 24 bytes a call). Stale hits go when a
window is written, idle keys in a sweep of the next batch, at most every
``SWEEP_EVERY`` s per process.
Nothing is synced: the file is in memory (``/dev/shm``), counters are rebuilt from the
request log when lost (tally/limits/rebuild.py).
"""

from __future__ import annotations

import bisect
import struct
import threading
from array import array
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote, urlparse

import lmdb
from limits.storage import MovingWindowSupport, Storage

from tally.limits.storage.lmdb_env import open_environment as _open
from tally.limits.storage.registry import wall_clock

SWEEP_EVERY = 0.2  # seconds between two sweep batches of one process
SWEEP_BATCH = 100  # keys of each kind looked at per batch
COUNTER = struct.Struct("<qd")  # value, expires at


class LMDBStorage(Storage, MovingWindowSupport):
    """Counters and moving windows in an LMDB file shared by the processes of one
    instance. Safe for the greenlets and threads of a process (they take turns) and
    across processes (see the module)."""

    STORAGE_SCHEME = ["tally+lmdb"]

    def __init__(self, uri: str | None = None, clock: Callable[[], float] | None = None, **_: Any):
        super().__init__(uri, wrap_exceptions=False)
        self.path = unquote(urlparse(uri or "").path)
        self.clock = clock or wall_clock
        self._guard = threading.RLock()
        self._depth = 0
        self.txn: lmdb.Transaction | None = None  # the open write transaction, in lock
        self.counters = self.windows = self.holds = None  # the sub-databases
        self._next_sweep = 0.0
        self._after = {"counters": b"", "windows": b"", "holds": b""}
        self._transaction = _Transaction(self)

    @property
    def base_exceptions(self) -> tuple[type[Exception], ...]:
        """The file is gone, unreadable or full."""
        return (lmdb.Error, OSError)

    @property
    def lock(self) -> _Transaction:
        """One write transaction across every process of the instance; re-entrant, so
        the storage calls an admission makes join it."""
        return self._transaction

    def _begin(self) -> None:
        self._guard.acquire()
        if self._depth:
            self._depth += 1
            return
        try:
            self.txn = self._environment().begin(write=True)
        except BaseException:
            self._guard.release()
            raise
        self._depth = 1

    def _end(self, failed: bool) -> None:
        try:
            if self._depth == 1:
                txn, self.txn = self.txn, None
                done = False
                try:
                    if not failed:
                        self._sweep(txn)
                        txn.commit()
                        done = True
                finally:
                    if not done:
                        txn.abort()
        finally:
            self._depth -= 1
            self._guard.release()

    def _environment(self) -> lmdb.Environment:
        """This process's environment on the file (opened on first use)."""
        env, self.counters, self.windows, self.holds = _open(self.path)
        return env

    # -- the limits storage API ------------------------------------------------------

    def incr(self, key: str, expiry: float, amount: int = 1) -> int:
        """Add ``amount``; a new (or expired) counter expires ``expiry`` seconds from now."""
        now = self.clock()
        with self.lock:
            name = key.encode()
            raw = self.txn.get(name, db=self.counters)
            value, expires_at = COUNTER.unpack(raw) if raw is not None else (0, 0.0)
            if expires_at <= now:
                value, expires_at = 0, now + expiry
            value += amount
            self.txn.put(name, COUNTER.pack(value, expires_at), db=self.counters)
        return value

    def get(self, key: str) -> int:
        """The counter's value (0 when missing or expired)."""
        now = self.clock()
        with self.lock:
            return self.counter(key, now)

    def get_expiry(self, key: str) -> float:
        """When the counter expires (now when it does not exist)."""
        now = self.clock()
        with self.lock:
            raw = self.txn.get(key.encode(), db=self.counters)
        expires_at = COUNTER.unpack(raw)[1] if raw is not None else now
        return max(expires_at, now)

    def check(self) -> bool:
        """True when the file can be opened and read."""
        try:
            with self.lock:
                self.txn.stat(self.counters)
        except (lmdb.Error, OSError):
            return False
        return True

    def reset(self) -> int:
        """Forget everything; the number of keys forgotten."""
        with self.lock:
            count = self.size()
            for db in (self.counters, self.windows, self.holds):
                self.txn.drop(db, delete=False)
        return count

    def clear(self, key: str) -> None:
        """Forget one key (counter or window)."""
        with self.lock:
            name = key.encode()
            self.txn.delete(name, db=self.counters)
            self.txn.delete(name, db=self.windows)

    def acquire_entry(self, key: str, limit: int, expiry: int, amount: int = 1) -> bool:
        """Record ``amount`` hits now if the window holds room for them."""
        now = self.clock()
        with self.lock:
            hits = self.live_hits(key, now - expiry)
            if amount > limit or len(hits) + amount > limit:
                return False
            self.add_hits(key, hits, expiry, now, amount)
        return True

    def get_moving_window(self, key: str, limit: int, expiry: int) -> tuple[float, int]:
        """(oldest hit still in the window, hits in the window); (now, 0) when empty."""
        now = self.clock()
        with self.lock:
            hits = self.live_hits(key, now - expiry)
        return (hits[0], len(hits)) if hits else (now, 0)

    def seed_entries(self, key: str, stamps: list[float], expiry: int) -> None:
        """Put hits back at the times they were made (counters rebuilt after a restart)."""
        since = self.clock() - expiry
        with self.lock:
            hits = self.live_hits(key, since)
            hits.extend(s for s in stamps if s >= since)
            self._put_window(key.encode(), expiry, array("d", sorted(hits)))

    def size(self) -> int:
        """Keys held (counters and windows)."""
        with self.lock:
            txn = self.txn
            return sum(txn.stat(db)["entries"] for db in (self.counters, self.windows, self.holds))

    # -- what the plan runner uses inside lock (tally/limits/storage/lmdb_plans.py) ----------

    def live_hits(self, key: str, since: float) -> array:
        """The window's hits at or after ``since`` (a hit exactly one window old still
        counts, as in ``limits``' own storages), oldest first."""
        raw = self.txn.get(key.encode(), db=self.windows)
        if raw is None:
            return array("d")
        hits = array("d", raw)
        return hits[bisect.bisect_left(hits, since, 1) :]

    def add_hits(self, key: str, hits: array, expiry: float, now: float, amount: int = 1) -> None:
        """Store the window ``hits`` (its live hits, as :meth:`live_hits` read them) with
        ``amount`` more at ``now``."""
        at = bisect.bisect_right(hits, now)  # another process may have stamped a later one
        hits[at:at] = array("d", [now] * amount)
        self._put_window(key.encode(), expiry, hits)

    def counter(self, key: str, now: float) -> int:
        """A counter's value at ``now`` (0 when missing or expired)."""
        raw = self.txn.get(key.encode(), db=self.counters)
        if raw is None:
            return 0
        value, expires_at = COUNTER.unpack(raw)
        return value if expires_at > now else 0

    def held(self, key: str, now: float) -> int:
        """What the live reservations under ``key`` add up to (inside lock)."""
        raw = self.txn.get(key.encode(), db=self.holds)
        if raw is None:
            return 0
        entries = array("d", raw)
        return int(sum(entries[i + 1] for i in range(0, len(entries), 3) if entries[i] > now))

    def hold(self, key: str, ident: int, amount: int, until: float) -> None:
        """Reserve ``amount`` under ``key`` for the call ``ident`` until ``until``; expired
        reservations go (inside lock)."""
        self._put_holds(key, ident, self.clock(), [until, float(amount), float(ident)])

    def release(self, key: str, ident: int) -> None:
        """Drop the call ``ident``'s reservation under ``key`` (inside lock)."""
        self._put_holds(key, ident, self.clock(), [])

    def raise_to(self, key: str, expiry: float, value: int) -> None:
        """Make the counter at least ``value`` (a peak); a new one expires in ``expiry`` s."""
        now = self.clock()
        with self.lock:
            current = self.counter(key, now)
            if current == 0 or value > current:
                self.incr(key, expiry, value - current)

    def _put_holds(self, key: str, ident: int, now: float, added: list[float]) -> None:
        name = key.encode()
        raw = self.txn.get(name, db=self.holds)
        entries = array("d", raw) if raw is not None else array("d")
        kept = array("d")
        for i in range(0, len(entries), 3):
            if entries[i] > now and entries[i + 2] != ident:
                kept.extend(entries[i : i + 3])
        kept.extend(added)
        if kept:
            self.txn.put(name, kept.tobytes(), db=self.holds)
        elif raw is not None:
            self.txn.delete(name, db=self.holds)

    def _put_window(self, name: bytes, expiry: float, hits: array) -> None:
        if not hits:
            self.txn.delete(name, db=self.windows)
            return
        self.txn.put(name, array("d", [expiry]).tobytes() + hits.tobytes(), db=self.windows)

    def _sweep(self, txn: lmdb.Transaction) -> None:
        """Drop expired counters, stale hits and empty windows among the next batch of
        keys (inside the transaction, at most every SWEEP_EVERY seconds per process)."""
        now = self.clock()
        if now < self._next_sweep:
            return
        self._next_sweep = now + SWEEP_EVERY
        for kind, db in (
            ("counters", self.counters),
            ("windows", self.windows),
            ("holds", self.holds),
        ):
            cursor = txn.cursor(db=db)
            after = self._after[kind]
            found = cursor.set_range(after + b"\0") if after else cursor.first()
            last = b""
            for _ in range(SWEEP_BATCH):
                if not found:
                    break
                last = cursor.key()
                if kind == "counters":
                    gone = COUNTER.unpack(cursor.value())[1] <= now
                elif kind == "holds":  # every reservation in it expired
                    stored = array("d", cursor.value())
                    gone = all(stored[i] <= now for i in range(0, len(stored), 3))
                else:
                    stored = array("d", cursor.value())
                    first = bisect.bisect_left(stored, now - stored[0], 1)
                    gone = first == len(stored)
                    if first > 1 and not gone:
                        del stored[1:first]
                        cursor.put(last, stored.tobytes())
                if gone:
                    cursor.delete()  # and on to the next key, if any
                    found = bool(cursor.key())
                else:
                    found = cursor.next()
            self._after[kind] = last if found else b""


class _Transaction:
    """``with storage.lock:`` (a plain class: entered several times per admission)."""

    __slots__ = ("_storage",)

    def __init__(self, storage: LMDBStorage):
        self._storage = storage

    def __enter__(self) -> None:
        self._storage._begin()

    def __exit__(self, kind, value, traceback) -> None:
        self._storage._end(failed=kind is not None)
