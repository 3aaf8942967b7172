"""Process-local caches for what every request reads: API keys, the tracking config, the
identity provider and the price table.

Correctness comes from one shared *version* number, not from a timer: every commit that
changes an API key or the tracking config bumps it (see :func:`watch_sessions`), and a
cached entry is used only while the version it was loaded under is still current.
Reading the version is cheap, so it is read on every lookup and a revoked key is refused
by the very next request, on every worker of every instance:

- ``RedisVersion`` (several instances): one ``GET`` on the shared Redis;
- ``FileVersion`` (one box, all its workers and its CLI): an 8-byte counter in a
  memory-mapped file in the instance folder; reading it is a memory load
  (both in tally/versions.py).

Entries also expire after :data:`MAX_AGE` seconds, a safety net for changes made behind
Tally's back (hand-written SQL) and for several instances run without Redis.
If the version cannot be read (Redis down), the cache steps aside and every lookup goes
to the database, as it would without a cache. If the database cannot be reached either,
the last good values are served for a bounded time (:class:`Cache`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy import event, inspect
from sqlalchemy.orm import ORMExecuteState, Session, sessionmaker

from tally.db import is_unavailable
from tally.errors import DatabaseUnavailable
from tally.outage import Outage
from tally.settings import DEFAULT_MAX_STALENESS, Settings
from tally.versions import Version, make_version

log = logging.getLogger(__name__)

MAX_AGE = 1.0  # seconds: the longest an entry lives without a version check to vouch for it
MAX_ENTRIES = 10_000  # API keys cached per process; the oldest half goes when full
_PENDING = "tally.cache.pending"
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
        "sinks",  # the usage writer's list of sinks (tally.sinks.outbox)
    }
)
# Columns that change on every request and that no cache holds (unit-of-work changes only).
IGNORED_COLUMNS = frozenset({"last_used_at"})


class Cache:
    """A small map of loaded values, each tagged with the version it was loaded under.

    When a reload fails because the database is unavailable, the last good value is
    served for up to ``max_staleness`` seconds after it was loaded (then, and for what
    was never loaded, :class:`DatabaseUnavailable`: a 503). A revocation made during an
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
                raise DatabaseUnavailable() from None
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

    def peek(self, key: Any) -> tuple[Any, int] | None:
        """The cached value for ``key`` and the version it was loaded under, without
        reading the version (None when there is none younger than ``max_age``): for a
        caller that checks the version later, in a round trip it makes anyway
        (tally/proxy/pipeline.py, at admission)."""
        entry = self._entries.get(key)
        if entry is None or entry[0] is None or self._clock() - entry[1] >= self.max_age:
            return None
        return entry[2], entry[0]

    def last(self, key: Any) -> Any:
        """The value last loaded for ``key``, current or not (None if none)."""
        entry = self._entries.get(key)
        return entry[2] if entry is not None else None

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
            raise DatabaseUnavailable()
        return entry[2]


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
