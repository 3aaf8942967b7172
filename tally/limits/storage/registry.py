"""``limits`` storages of Tally's own, registered in the library's storage registry.

- :class:`LocalStorage` (``tally+memory://``): counters and moving windows in this
  process, compact (a moving window is an ``array`` of 8-byte timestamps per key, not
  an object per hit) and with an injectable clock, so tests move time instead of
  sleeping. Exact for one process: a whole instance that is
  one process (tests, ``flask run``).

:class:`tally.limits.storage.lmdb_file.LMDBStorage` (``tally+lmdb://``) is the one every worker
of an instance shares.
"""

from __future__ import annotations

import bisect
import threading
import time
from array import array
from collections.abc import Callable, Iterator
from typing import Any

from limits.storage import MovingWindowSupport, Storage

_LOCKED = ("incr", "get", "get_expiry", "reset", "clear", "acquire_entry", "get_moving_window")
SWEEP_EVERY = 60.0  # seconds between sweeps of expired keys
SWEEP_BATCH = 200  # keys looked at per write while a sweep is under way


def wall_clock() -> float:
    """``time.time()``, looked up at each call (so a test that patches it is obeyed)."""
    return time.time()


class LocalStorage(Storage, MovingWindowSupport):
    """In-process counters (fixed windows) and moving windows; not thread-safe on its
    own: callers hold :attr:`lock` (the server is single-threaded)."""

    STORAGE_SCHEME = ["tally+memory"]

    def __init__(self, uri: str | None = None, clock: Callable[[], float] | None = None, **_: Any):
        super().__init__(uri, wrap_exceptions=False)
        self.clock = clock or wall_clock
        self.lock = threading.RLock()
        self._counters: dict[str, list[float]] = {}  # key -> [value, expires_at]
        self._windows: dict[str, array] = {}  # key -> ascending hit timestamps
        self._window_expiry: dict[str, float] = {}
        self._holds: dict[str, dict[int, tuple[int, float]]] = {}  # key -> id -> (amount, until)
        self._next_sweep = 0.0
        self._sweep: Iterator[str] | None = None

    @property
    def base_exceptions(self) -> type[Exception]:
        """Nothing here fails for reasons outside the caller's control."""
        return ValueError

    def incr(self, key: str, expiry: float, amount: int = 1) -> int:
        """Add ``amount``; a new counter expires ``expiry`` seconds from now."""
        now = self._tick()
        entry = self._counters.get(key)
        if entry is None or entry[1] <= now:
            entry = self._counters[key] = [0, now + expiry]
        entry[0] += amount
        return int(entry[0])

    def get(self, key: str) -> int:
        """The counter's value (0 when missing or expired)."""
        entry = self._counters.get(key)
        return int(entry[0]) if entry is not None and entry[1] > self.clock() else 0

    def get_expiry(self, key: str) -> float:
        """When the counter expires (now when it does not exist)."""
        now = self.clock()
        entry = self._counters.get(key)
        return entry[1] if entry is not None and entry[1] > now else now

    def check(self) -> bool:
        """Always reachable."""
        return True

    def reset(self) -> int:
        """Forget everything; the number of keys forgotten."""
        count = len(self._counters) + len(self._windows) + len(self._holds)
        self._counters.clear()
        self._windows.clear()
        self._window_expiry.clear()
        self._holds.clear()
        return count

    def clear(self, key: str) -> None:
        """Forget one key (counter or window)."""
        self._counters.pop(key, None)
        self._windows.pop(key, None)
        self._window_expiry.pop(key, None)

    def acquire_entry(self, key: str, limit: int, expiry: int, amount: int = 1) -> bool:
        """Record ``amount`` hits now if the window holds room for them."""
        now = self._tick()
        hits = self._live(key, expiry, now)
        if amount > limit or len(hits) + amount > limit:
            return False
        hits.extend([now] * amount)
        self._window_expiry[key] = expiry
        return True

    def get_moving_window(self, key: str, limit: int, expiry: int) -> tuple[float, int]:
        """(oldest hit still in the window, hits in the window); (now, 0) when empty."""
        now = self.clock()
        hits = self._live(key, expiry, now)
        return (hits[0], len(hits)) if hits else (now, 0)

    def seed_entries(self, key: str, stamps: list[float], expiry: int) -> None:
        """Put hits back at the times they were made (counters rebuilt after a restart)."""
        now = self._tick()
        hits = self._live(key, expiry, now)
        merged = sorted([*hits, *(s for s in stamps if s >= now - expiry)])
        self._windows[key] = array("d", merged)
        self._window_expiry[key] = expiry

    def size(self) -> int:
        """Keys held (counters, windows and reservations)."""
        return len(self._counters) + len(self._windows) + len(self._holds)

    # -- reservations and peaks (tally/limits/engine.py) ------------------------------

    def held(self, key: str, now: float) -> int:
        """What the live reservations under ``key`` add up to (expired ones go)."""
        entries = self._holds.get(key)
        if not entries:
            return 0
        total = 0
        for ident, (amount, until) in list(entries.items()):
            if until > now:
                total += amount
            else:
                del entries[ident]
        if not entries:
            del self._holds[key]
        return total

    def hold(self, key: str, ident: int, amount: int, until: float) -> None:
        """Reserve ``amount`` under ``key`` for the call ``ident``, until ``until``."""
        self._holds.setdefault(key, {})[ident] = (amount, until)

    def release(self, key: str, ident: int) -> None:
        """Drop the call ``ident``'s reservation under ``key`` (gone already: nothing)."""
        entries = self._holds.get(key)
        if entries is not None:
            entries.pop(ident, None)
            if not entries:
                del self._holds[key]

    def raise_to(self, key: str, expiry: float, value: int) -> None:
        """Make the counter at least ``value`` (a peak); a new one expires in ``expiry`` s."""
        now = self._tick()
        entry = self._counters.get(key)
        if entry is None or entry[1] <= now:
            self._counters[key] = [value, now + expiry]
        elif value > entry[0]:
            entry[0] = value

    def _live(self, key: str, expiry: float, now: float) -> array:
        hits = self._windows.get(key)
        if hits is None:
            hits = self._windows[key] = array("d")
            return hits
        start = bisect.bisect_left(hits, now - expiry)  # a hit exactly one window old counts
        if start:
            del hits[:start]
        return hits

    def _tick(self) -> float:
        """Now; and drop a few expired keys, so idle users cost nothing. The sweep goes a
        batch at a time over a snapshot of the keys taken once a minute: a single pass
        over 100,000 users' keys would hold every worker's admissions for ~0.1 s."""
        now = self.clock()
        if self._sweep is None and now >= self._next_sweep:
            self._next_sweep = now + SWEEP_EVERY
            self._sweep = iter([*self._counters, *self._windows, *self._holds])
        if self._sweep is not None:
            for _ in range(SWEEP_BATCH):
                key = next(self._sweep, None)
                if key is None:
                    self._sweep = None
                    break
                self._expire(key, now)
        return now

    def _expire(self, key: str, now: float) -> None:
        entry = self._counters.get(key)
        if entry is not None and entry[1] <= now:
            del self._counters[key]
        hits = self._windows.get(key)
        if hits is not None and (not hits or hits[-1] < now - self._window_expiry.get(key, 0)):
            self.clear(key)
        if key in self._holds:
            self.held(key, now)


def _with_lock(method: Callable) -> Callable:
    def locked(self, *args: Any, **kwargs: Any) -> Any:
        with self.lock:
            return method(self, *args, **kwargs)

    locked.__doc__, locked.__name__ = method.__doc__, method.__name__
    return locked


# Threads of one process (the tests' server, flask-limiter's login throttling) may share
# a LocalStorage.
for _name in (*_LOCKED, "seed_entries", "held", "hold", "release", "raise_to"):
    setattr(LocalStorage, _name, _with_lock(getattr(LocalStorage, _name)))
