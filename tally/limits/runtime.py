"""This process's limit storage and what runs a plan on it (tally/limits/admission.py
uses them): the deployment's storage for ``TALLY_RATELIMIT_STORAGE_URI``, the policies'
caches, the counters trusted as rebuilt, and the outage handling (fail open or closed)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from limits.storage import Storage, storage_from_string
from sqlalchemy.orm import sessionmaker

from tally.cache import Cache
from tally.errors import LimitsUnavailable
from tally.limits import engine
from tally.limits.storage.lmdb_file import LMDBStorage
from tally.limits.storage.lmdb_plans import LMDBPlans
from tally.limits.storage.redis_plans import RedisPlans, plans_for
from tally.limits.storage.registry import LocalStorage, wall_clock
from tally.versions import PolledVersion, RedisVersion

log = logging.getLogger(__name__)
LOG_EVERY = 60.0  # seconds between two log lines about an unreachable storage
READY_TRUST = 60.0  # seconds; a storage restarted within them loses its counters' rebuild
READY_MAX = 200_000
# seconds between two reads of a Redis-held cache version for the policies: a change
# applies everywhere within this (the contract says within 1 second)
POLICY_POLL = 0.5


@dataclass
class LimitsRuntime:
    """This process's view of the limit storage."""

    storage: Storage
    sessions: sessionmaker | None = None  # policies, users' tiers, counters rebuilt from the log
    cache: Cache | None = None  # policies, on the runtime's version (polled on Redis)
    metadata_cache: Cache | None = None  # users' stored metadata (tiers), same version
    fail: str = "open"
    clock: Callable[[], float] = wall_clock
    description: str = "memory"
    unavailable_count: int = 0  # requests served (open) or refused (closed) unchecked
    _logged_at: float = float("-inf")
    # Counters this process has seen rebuilt ("ready"), and until when it trusts that
    # without asking the storage again: saves a lookup per check per request.
    ready: dict[str, float] = field(default_factory=dict)
    # (storage, what runs a whole plan on it in one call: the storage itself, or for
    # Redis a Lua script), found again when a test swaps the storage
    _runner: tuple[Storage, Any] | None = None
    # the runtime's cache version when it lives in the Redis the script runs on: then an
    # admission checks the tracking config's version in its own round trip
    versions: RedisVersion | None = None

    def checks_versions(self) -> bool:
        """True when an admission can check the cache version (see ``versions``)."""
        return self.versions is not None and isinstance(self.runner(), RedisPlans)

    def unready(self, markers: list[str]) -> list[str]:
        """The markers not recently seen ready."""
        now = time.monotonic()
        return [m for m in markers if self.ready.get(m, 0.0) <= now]

    def note_ready(self, markers: list[str]) -> None:
        """Trust these markers for READY_TRUST seconds."""
        if not markers:
            return
        if len(self.ready) > READY_MAX:
            self.ready.clear()
        until = time.monotonic() + READY_TRUST
        for marker in markers:
            self.ready[marker] = until

    def set_clock(self, clock: Callable[[], float]) -> None:
        """Use ``clock`` for windows and periods (tests move time instead of sleeping)."""
        self.clock = clock
        if isinstance(self.storage, LocalStorage | LMDBStorage):
            self.storage.clock = clock

    def runner(self) -> Any:
        """What runs a plan on the storage in one call: a script on Redis, one
        transaction on the counter file, else the storage itself (the engine)."""
        if self._runner is None or self._runner[0] is not self.storage:
            storage = self.storage
            plans = LMDBPlans(storage) if isinstance(storage, LMDBStorage) else None
            self._runner = (storage, plans or plans_for(storage) or storage)
        return self._runner[1]

    def run(self, plan: dict[str, Any]) -> dict[str, Any]:
        """Run an admission plan: on the server when the storage has one."""
        remote = getattr(self.runner(), "evaluate", None)
        return remote(plan) if remote is not None else engine.evaluate(self.storage, plan)

    def settle(self, settlement: dict[str, Any]) -> None:
        """A call's end on the counters (tally.limits.engine.settle)."""
        remote = getattr(self.runner(), "settle", None)
        if remote is not None:
            remote(settlement)
        else:
            engine.settle(self.storage, settlement)

    def storage_failed(self, exc: Exception, what: str) -> None:
        """Count it, log it at most once a minute; raise 503 when failing closed."""
        self.unavailable_count += 1
        now = time.monotonic()
        if now - self._logged_at >= LOG_EVERY:
            self._logged_at = now
            log.error(
                "limit storage %s unreachable while %s (%s: %s); failing %s (%d requests so far)",
                self.description,
                what,
                type(exc).__name__,
                exc,
                self.fail,
                self.unavailable_count,
            )
        if self.fail == "closed" and what == "admitting":
            raise LimitsUnavailable(
                "Rate limits cannot be checked right now, so the request was not served. "
                "Try again shortly."
            ) from None


def make_storage(uri: str | None, db_path: str | None) -> tuple[Storage, str]:
    """The storage for ``TALLY_RATELIMIT_STORAGE_URI`` (any ``limits`` URI, ours
    included); unset: the instance's shared counter file (under gunicorn), or this
    process's memory when the process is the whole instance."""
    if uri:
        options: dict[str, Any] = {}
        if uri.startswith(("redis://", "rediss://", "redis+sentinel://", "redis+cluster://")):
            # an unreachable Redis must fail fast, not hold the request for the OS timeout
            options = {"socket_timeout": 0.5, "socket_connect_timeout": 0.5}
        return storage_from_string(uri, **options), uri.split("://", 1)[0] + "://"
    if db_path:
        return LMDBStorage(f"tally+lmdb://{db_path}"), "tally+lmdb:// (this instance's file)"
    return LocalStorage(), "tally+memory:// (this process)"


def build_limits(settings, cache: Cache, sessions: sessionmaker) -> LimitsRuntime:
    """This process's limits: the deployment's storage, policies read from ``sessions``
    through ``cache`` (a change to them bumps its version everywhere)."""
    storage, description = make_storage(settings.ratelimit_storage_uri, settings.limits_db)
    version = cache.version
    if isinstance(version, RedisVersion):  # a GET per lookup: poll it instead (in contract)
        version = PolledVersion(version, POLICY_POLL)
    return LimitsRuntime(
        storage,
        sessions,
        Cache(version, max_staleness=cache.max_staleness),
        Cache(version, max_staleness=cache.max_staleness),  # users' metadata (tiers)
        settings.ratelimit_fail,
        description=description,
        versions=cache.version if isinstance(cache.version, RedisVersion) else None,
    )
