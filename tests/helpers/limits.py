"""Helpers for the limits tests: a clock the test moves, and policies set like the CLI."""

from __future__ import annotations

import time
from datetime import UTC, datetime

from tally.limits.policy import parse_assignments
from tally.limits.policy_store import reset_user, set_policy

# Today's UTC midnight: request rows are stamped with the real time, and counters rebuilt
# from them must fall in the same day as the test's clock.
T0 = float(int(time.time()) // 86400 * 86400)


def next_month(epoch: float) -> float:
    """The start of the calendar month after ``epoch`` (UTC)."""
    moment = datetime.fromtimestamp(epoch, UTC)
    year, month = (moment.year + 1, 1) if moment.month == 12 else (moment.year, moment.month + 1)
    return datetime(year, month, 1, tzinfo=UTC).timestamp()


def iso(epoch: float) -> str:
    """``2025-12-02T01:00:01Z``."""
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Clock:
    """Epoch seconds that move only when the test says so."""

    def __init__(self, now: float = T0 + 3600):
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        """Move time forward."""
        self.now += seconds


def use_clock(flask_app, clock: Clock) -> Clock:
    """Make ``flask_app``'s limits (windows and periods) follow ``clock``."""
    flask_app.extensions["tally"].limits.set_clock(clock)
    return clock


def set_limits(flask_app, scope: str, *assignments: str) -> None:
    """``limits set SCOPE FIELD=VALUE …`` through the service."""
    with flask_app.extensions["tally"].sessions() as session:
        set_policy(session, scope, parse_assignments(assignments), "test")


def reset(flask_app, scope: str) -> None:
    """``limits reset SCOPE`` through the service."""
    with flask_app.extensions["tally"].sessions() as session:
        reset_user(session, scope, "test")


def forget_redis_counters(url: str) -> None:
    """Drop Tally's counter keys from the Redis at ``url`` (tests leave none behind)."""
    import redis

    client = redis.Redis.from_url(url)
    try:
        for key in client.scan_iter(match="*tally/*", count=1000):
            client.delete(key)
    finally:
        client.close()


def forget_counters(flask_app) -> None:
    """Drop this deployment's limit counters (only Tally's keys: on a shared Redis other
    keys belong to others)."""
    storage = flask_app.extensions["tally"].limits.storage
    client = getattr(storage, "storage", None)  # limits' RedisStorage keeps its client here
    if client is None:
        storage.reset()
        return
    for key in client.scan_iter(match="*tally/*", count=1000):
        client.delete(key)
