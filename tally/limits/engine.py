"""One admission decision over every limit that applies to a request.

A *plan* (plain JSON, so a Redis script can run it too: tally.limits.storage.redis_plans) lists
the request's checks:

- ``window`` checks (``messages``: 24 h, ``rpm``: 60 s) use ``limits``'
  :class:`~limits.strategies.MovingWindowRateLimiter`: a hit is a timestamp; a request
  passes while fewer than N hits lie in the last 24 h (or minute), so it is a true
  rolling window, exact to the second;
- ``counter`` checks (tokens and budgets) use a
  :class:`~limits.strategies.FixedWindowRateLimiter` test on a counter per UTC day or
  calendar month, that the recorded usage of each call adds to: a call passes while the
  period's usage is below the limit.

Every check is tested first; only when all pass are the window checks hit, so a request
refused by any limit costs nothing anywhere. Under the storage's ``lock`` (a
:class:`LocalStorage`'s, or a transaction across processes on the instance's
``tally+lmdb://`` file, where :mod:`tally.limits.storage.lmdb_plans` runs the same decision in
fewer steps) and as one Lua script on Redis the plan runs atomically. On a
storage with neither (Redis Cluster) the tests and hits are separate calls: a race can
overshoot by the calls admitted at the same instant, and a request refused by a later
limit can keep an earlier hit.

``markers`` claim the rebuilding of a counter from the request log: the first caller to
see a counter not ready since the storage started rebuilds it, and the others wait for
it (``pending``) rather than count on an empty counter; ``ready`` marks it rebuilt.
``resets`` apply a ``limits reset`` recorded in the database exactly once.
"""

from __future__ import annotations

import contextlib
from typing import Any

from limits import RateLimitItemPerSecond
from limits.storage import Storage
from limits.strategies import FixedWindowRateLimiter, MovingWindowRateLimiter

MARKER_TTL = 40 * 86400  # seconds: longer than any counter they vouch for
CLAIM_TTL = 5  # seconds a rebuild may take before another request may claim it


class KeyedItem(RateLimitItemPerSecond):
    """A limit of ``amount`` per ``multiples`` seconds stored under a key of ours: the
    key does not embed the amount, so changing a policy keeps the counts made so far."""

    def key_for(self, *identifiers: str) -> str:
        """The counter's key, as given."""
        return "/".join(identifiers)


def evaluate(storage: Storage, plan: dict[str, Any]) -> dict[str, Any]:
    """Run ``plan`` on ``storage`` (under its lock when it has one); see the module."""
    lock = getattr(storage, "lock", None)
    with lock if lock is not None else contextlib.nullcontext():
        return _evaluate(storage, plan)


def claims(storage: Storage, plan: dict[str, Any]) -> dict[str, Any] | None:
    """Apply the plan's resets and rebuilt markers, then claim its markers' rebuilds:
    the answer when a counter must be rebuilt first (by this caller: ``unseeded``, or
    another: ``pending``), else None. Runs in the caller's transaction, on the storage's
    own calls (resets and rebuilds are rare: no storage needs them fast)."""
    for reset in plan.get("resets", ()):
        if storage.get(reset["mark"]) < reset["at"]:
            for key in reset["keys"]:
                storage.clear(key)
            storage.clear(reset["mark"])
            storage.incr(reset["mark"], MARKER_TTL, reset["at"])
    for marker in plan.get("ready", ()):
        storage.incr(f"{marker}/ready", MARKER_TTL)
    unseeded, pending = [], False
    for marker in plan.get("markers", ()):
        if storage.get(f"{marker}/ready"):
            continue
        if storage.incr(marker, CLAIM_TTL) == 1:
            unseeded.append(marker)
        else:
            pending = True  # another request is rebuilding it right now
    if unseeded or pending:
        return {"unseeded": unseeded, "pending": pending}
    return None


def worst(refused: list[int], stats: list[list[float]]) -> int:
    """The refusing check whose limit frees up last (the request waits for all)."""
    return max(refused, key=lambda i: stats[i][0])


def hit_made(stats: list[float], check: dict[str, Any], now: float) -> None:
    """A window's ``[reset, remaining]`` once this request's hit is in it."""
    if stats[1] == check["limit"]:  # the window was empty: it starts now
        stats[0] = now + check["expiry"]
    stats[1] -= 1


def _evaluate(storage: Storage, plan: dict[str, Any]) -> dict[str, Any]:
    claimed = claims(storage, plan)
    if claimed is not None:
        return claimed
    moving, fixed = MovingWindowRateLimiter(storage), FixedWindowRateLimiter(storage)
    stats, refused = [], []
    for index, check in enumerate(plan["checks"]):
        if check["kind"] == "window":
            item = KeyedItem(check["limit"], check["expiry"])
            reset, remaining = moving.get_window_stats(item, check["key"])
            passes = remaining >= 1
        else:
            item = KeyedItem(check["limit"], 1)
            used = storage.get(check["key"])
            passes = fixed.test(item, check["key"])
            reset, remaining = check["reset"], max(0, check["limit"] - used)
        stats.append([reset, remaining])
        if not passes:
            refused.append(index)
    if refused:
        return {"refused": worst(refused, stats), "stats": stats}
    if plan.get("hit", True):
        for index, check in enumerate(plan["checks"]):
            if check["kind"] != "window":
                continue
            item = KeyedItem(check["limit"], check["expiry"])
            if not moving.hit(item, check["key"]):  # only on storages shared without a lock
                stats[index][1] = 0
                return {"refused": index, "stats": stats}
            hit_made(stats[index], check, plan["now"])
    return {"refused": None, "stats": stats}


def add_usage(storage: Storage, additions: list[list[Any]]) -> None:
    """Add each ``[key, expiry, amount]`` to its counter (a call's tokens and cost)."""
    lock = getattr(storage, "lock", None)
    with lock if lock is not None else contextlib.nullcontext():
        for key, expiry, amount in additions:
            if amount:
                storage.incr(key, expiry, amount)
