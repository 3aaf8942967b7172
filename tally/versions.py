"""The deployment-wide version number the caches (tally/cache.py) are checked against:
bumped on every change to what they copy, read on every lookup.

- :class:`FileVersion` (one box, all its workers and its CLI): an 8-byte counter in a
  memory-mapped file in the instance folder; reading it is a memory load.
- :class:`RedisVersion` (several instances): one ``GET`` on the shared Redis.
- :class:`PolledVersion`: another version, read at most every so often.
"""

from __future__ import annotations

import fcntl
import logging
import mmap
import os
import struct
import threading
import time
from pathlib import Path
from typing import Protocol

log = logging.getLogger(__name__)
_COUNTER = struct.Struct("<Q")


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


def make_version(instance_path: str, redis_url: str | None) -> Version:
    """Redis when the deployment has one, else the instance folder's counter file."""
    if redis_url and redis_url.startswith(("redis://", "rediss://")):
        return RedisVersion(redis_url)
    return FileVersion(Path(instance_path, "cache-version"))
