"""Readiness checks: can this process reach what every request needs?

Each check answers ``"ok"`` or a short reason; none raises and none reveals a URL or a
password. They are quick: the database ping uses the pool, Redis gets a one-second
timeout.
"""

from __future__ import annotations

import functools
import logging

from sqlalchemy import Engine, text

from tally.limits.storage.lmdb_file import LMDBStorage

log = logging.getLogger(__name__)
REDIS_TIMEOUT = 1.0


def check_database(engine: Engine) -> str:
    """``SELECT 1`` through the pool."""
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as exc:
        log.warning("readiness: database unreachable (%s)", type(exc).__name__)
        return "unreachable"
    return "ok"


def check_limiter_storage(uri: str | None, db_path: str | None = None) -> str:
    """PING the Redis the rate limits use, or read the instance's counter file (under
    gunicorn); the in-process storage is always there."""
    if not uri and db_path:
        if LMDBStorage(f"tally+lmdb://{db_path}").check():
            return "ok"
        log.warning("readiness: the limit counters' file cannot be read")
        return "unreachable"
    if not uri or not uri.startswith(("redis://", "rediss://")):
        return "ok"
    try:
        _redis_client(uri).ping()
    except Exception as exc:
        log.warning("readiness: limiter storage unreachable (%s)", type(exc).__name__)
        return "unreachable"
    return "ok"


@functools.lru_cache(maxsize=4)
def _redis_client(uri: str):
    import redis

    return redis.Redis.from_url(
        uri, socket_timeout=REDIS_TIMEOUT, socket_connect_timeout=REDIS_TIMEOUT
    )
