"""Process-local caches for what every request reads: API keys, the tracking config, the
identity provider and the price table.

Correctness comes from one shared *version* number, not from a timer: every commit that
changes an API key or the tracking config bumps it (see :func:`watch_sessions`), and a
cached entry is used only while the version it was loaded under is still current.
Reading the version is cheap, so it is read on every lookup and a revoked key is refused
by the very next request, on every worker of every instance:

- :class:`RedisVersion` (several instances): one ``GET`` on the shared Redis.
- :class:`FileVersion` (one box, all its workers and its CLI): an 8-byte counter in a
  memory-mapped file in the instance folder; reading it is a memory load.

Entries also expire after :data:`MAX_AGE` seconds, a safety net for changes made behind
Tally's back (hand-written SQL) and for several instances run without Redis.
If the version cannot be read (Redis down), the cache steps aside and every lookup goes
to the database, as it would without a cache. If the database cannot be reached either,
the last good values are served for a bounded time (:class:`Cache`).
"""

from __future__ import annotations

import fcntl
import logging
import mmap
import os
import struct
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from sqlalchemy import event, inspect
from sqlalchemy.orm import ORMExecuteState, Session, sessionmaker

from tally.db import is_unavailable
from tally.errors import ServiceUnavailable
from tally.outage import Outage
from tally.settings import DEFAULT_MAX_STALENESS, Settings

log = logging.getLogger(__name__)

MAX_AGE = 1.0  # seconds: the longest an entry lives without a version check to vouch for it
MAX_ENTRIES = 10_000  # API keys cached per process; the oldest half goes when full
_PENDING = "tally.cache.pending"
_COUNTER = struct.Struct("<Q")
# The tables whose rows the caches copy. A change to a row of one of them, committed
# through a watched session, invalidates every cache everywhere.
WATCHED_TABLES = frozenset(
    {
        "api_keys",
        "config_revisions",
        "identity_providers",
        "limit_policies",
        "limit_settings",
        "limit_resets",
        "model_prices",
    }
)
# Columns that change on every request and that no cache holds (unit-of-work changes only).
IGNORED_COLUMNS = frozenset({"last_used_at"})


class Version(Protocol):
    """A deployment-wide counter: read on every lookup, bumped on every change."""

    def read(self) -> int | None:
        """The current value, or None when it cannot be read."""

    def bump(self) -> None:
        """Make every cache entry loaded so far stale, in every process."""


class FileVersion:
    """A counter in a memory-mapped file: shared by every process on one machine."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            if os.fstat(fd).st_size < _COUNTER.size:
                os.ftruncate(fd, _COUNTER.size)
            self._map = mmap.mmap(fd, _COUNTER.size)
        finally:
            os.close(fd)
        self._lock = threading.Lock()

    def read(self) -> int:
        """An aligned 8-byte load: never torn on the platforms gunicorn runs on."""
        return _COUNTER.unpack_from(self._map)[0]

    def bump(self) -> None:
        """Increment under an exclusive file lock (several processes may bump at once)."""
        with self._lock, open(self.path, "rb+") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                _COUNTER.pack_into(self._map, 0, self.read() + 1)
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def close(self) -> None:
        """Unmap the file."""
        self._map.close()


class RedisVersion:
    """A counter in Redis: shared by every instance of the deployment."""

    KEY = "tally:cache:version"

    def __init__(self, url: str):
        import redis  # only deployments with Redis need the client

        self._redis = redis.Redis.from_url(url, socket_timeout=0.5, socket_connect_timeout=0.5)
        self._failing = False  # one log line per Redis outage, not one per request

    def read(self) -> int | None:
        """The counter (0 before the first bump), or None when Redis does not answer."""
        try:
            value = self._redis.get(self.KEY)
        except Exception as exc:  # redis.RedisError and socket errors alike: use the DB
            if not self._failing:
                self._failing = True
                log.warning("cache version unreadable (%s); reading from the database", exc)
            return None
        if self._failing:
            self._failing = False
            log.warning("cache version readable again")
        return int(value or 0)

    def bump(self) -> None:
        """INCR; a failure is logged (entries still expire after MAX_AGE)."""
        try:
            self._redis.incr(self.KEY)
        except Exception:
            log.error("could not bump the cache version in Redis", exc_info=True)

    def close(self) -> None:
        """Drop the connection pool."""
        self._redis.close()


class PolledVersion:
    """Another version read at most every ``interval`` seconds: for what may lag a
    little (limit policies: "within 1 second"), so a Redis-backed version costs one
    ``GET`` per interval instead of one per lookup. A bump through it is seen at once."""

    def __init__(self, version: Version, interval: float, clock=time.monotonic):
        self.version, self.interval, self._clock = version, interval, clock
        self._value: int | None = None
        self._until = float("-inf")

    def read(self) -> int | None:
        """The version as last read, re-read once ``interval`` has passed."""
        now = self._clock()
        if now >= self._until:
            self._value = self.version.read()
            self._until = now + self.interval if self._value is not None else now
        return self._value

    def bump(self) -> None:
        """Bump the version, and read it again next time."""
        self.version.bump()
        self._until = float("-inf")


class Cache:
    """A small map of loaded values, each tagged with the version it was loaded under.

    When a reload fails because the database is unavailable, the last good value is
    served for up to ``max_staleness`` seconds after it was loaded (then, and for what
    was never loaded, :class:`ServiceUnavailable`: a 503). A revocation made during an
    outage is therefore honoured at most ``max_staleness`` late (docs/operations.md).
    """

    def __init__(
        self,
        version: Version,
        max_age: float = MAX_AGE,
        clock=time.monotonic,
        max_staleness: float = DEFAULT_MAX_STALENESS,
    ):
        self.version = version
        self.max_age = max_age
        self.max_staleness = max_staleness
        self._clock = clock
        self._entries: dict[Any, tuple[int | None, float, Any]] = {}
        self.outage = Outage(clock=clock)
        self.last_load: float | None = None  # when the database last answered a load

    def get(self, key: Any, load: Callable[[], Any]) -> Any:
        """The cached value for ``key`` if still current, else ``load()`` (and keep it
        unless it is None: misses are not cached, so a key created a moment ago works).

        The version is read *before* loading: a change committed while loading bumps
        past it, so the value loaded is never kept as current for longer than it is.
        Without a readable version (Redis down) every lookup loads, as without a cache.
        """
        current = self.version.read()
        now = self._clock()
        entry = self._entries.get(key)
        if (
            entry is not None
            and current is not None
            and entry[0] == current
            and now - entry[1] < self.max_age
        ):
            return entry[2]
        if entry is not None and not self.outage.should_try():
            return self._stale(entry, now)
        try:
            value = load()
        except Exception as exc:
            if not is_unavailable(exc):
                raise
            self.outage.failed(exc)
            if entry is None:
                raise ServiceUnavailable() from None
            return self._stale(entry, now)
        self.outage.recovered()
        self.last_load = now
        if value is None:
            self._entries.pop(key, None)  # deleted or revoked: never served stale
            return None
        if len(self._entries) >= MAX_ENTRIES:
            for stale in list(self._entries)[: MAX_ENTRIES // 2]:
                self._entries.pop(stale, None)
        self._entries[key] = (current, now, value)
        return value

    def serving(self) -> bool:
        """Whether this process can still serve what it knows (the database answered a
        load within ``max_staleness``): /readyz's "degraded" rather than "unavailable"."""
        return self.last_load is not None and self._clock() - self.last_load <= self.max_staleness

    def clear(self) -> None:
        """Forget everything (this process only)."""
        self._entries.clear()

    def _stale(self, entry: tuple[int | None, float, Any], now: float) -> Any:
        """The last good value during an outage, while it is recent enough."""
        if now - entry[1] > self.max_staleness:
            raise ServiceUnavailable()
        return entry[2]


def make_version(instance_path: str, redis_url: str | None) -> Version:
    """Redis when the deployment has one, else the instance folder's counter file."""
    if redis_url and redis_url.startswith(("redis://", "rediss://")):
        return RedisVersion(redis_url)
    return FileVersion(Path(instance_path, "cache-version"))


def build_cache(settings: Settings) -> Cache:
    """A cache versioned for ``settings``' deployment (see :func:`make_version`)."""
    return Cache(
        make_version(settings.instance_path, settings.ratelimit_storage_uri),
        max_staleness=settings.max_staleness,
    )


def watch_sessions(sessions: sessionmaker, cache: Cache) -> None:
    """Bump ``cache``'s version after any commit of ``sessions`` that changed an API key
    or a config revision, whoever made it (API, console, CLI): they all use this session
    factory. Lookups are handed the cache explicitly (``authenticate``, ``active_config``).

    Objects changed through the unit of work are looked at column by column: touching
    only :data:`IGNORED_COLUMNS` does not count. An ORM bulk statement on a watched
    table (``session.execute(update(ApiKey)…)``) always counts: SQLAlchemy has no public
    way to tell which columns it sets, and a needless bump costs one reload per process.
    Core statements on the session's connection (``session.connection().execute``) are
    not seen at all; the usage writer touches ``last_used_at`` that way, on purpose.
    """

    @event.listens_for(sessions, "before_flush")
    def note_changes(session: Session, _context, _instances) -> None:
        for obj in (*session.new, *session.deleted):
            if _table(obj) in WATCHED_TABLES:
                session.info[_PENDING] = True
                return
        for obj in session.dirty:
            if _table(obj) in WATCHED_TABLES and _changed_columns(obj) - IGNORED_COLUMNS:
                session.info[_PENDING] = True
                return

    @event.listens_for(sessions, "do_orm_execute")
    def note_bulk_changes(state: ORMExecuteState) -> None:
        if not (state.is_insert or state.is_update or state.is_delete):
            return
        tables = {mapper.local_table.name for mapper in state.all_mappers}
        if not tables:  # a Core statement on a Table run through the session
            tables = {getattr(state.statement.table, "name", None)}
        if tables & WATCHED_TABLES:
            state.session.info[_PENDING] = True

    @event.listens_for(sessions, "after_commit")
    def bump(session: Session) -> None:
        if session.info.pop(_PENDING, False):
            cache.version.bump()

    @event.listens_for(sessions, "after_rollback")
    def forget(session: Session) -> None:
        session.info.pop(_PENDING, None)


def _table(obj: Any) -> str | None:
    return getattr(getattr(obj, "__table__", None), "name", None)


def _changed_columns(obj: Any) -> set[str]:
    state = inspect(obj)
    return {attr.key for attr in state.attrs if attr.history.has_changes()}
