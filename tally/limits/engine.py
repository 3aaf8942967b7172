"""One admission decision over every limit that applies to a request.

A *plan* (plain JSON, so a Redis script can run it too: tally.limits.storage.redis_plans) lists
the request's checks:

- ``window`` checks (``messages``: 24 h, ``rpm``: 60 s) use ``limits``'
  :class:`~limits.strategies.MovingWindowRateLimiter`: a hit is a timestamp; a request
  passes while fewer than N hits lie in the last 24 h (or minute), so it is a true
  rolling window, exact to the second;
- ``counter`` checks (tokens and budgets) read a counter per UTC day or calendar month,
  that the recorded usage of each call adds to, and the *reservations* of the calls in
  flight under it (``<key>/held``): a call passes while used + reserved is below the
  limit, and once admitted holds what it is expected to use (the plan's ``demand``,
  :func:`reservation`) until its answer ends and :func:`settle` swaps the hold for the
  real figures. So calls admitted at once overshoot a limit by one call at most.

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
import math
from typing import Any

from limits import RateLimitItemPerSecond
from limits.storage import Storage
from limits.strategies import MovingWindowRateLimiter

MARKER_TTL = 40 * 86400  # seconds: longer than any counter they vouch for
CLAIM_TTL = 5  # seconds a rebuild may take before another request may claim it
# seconds a limit taken up only by calls in flight says it frees up in (they end soon)
HOLD_RETRY = 2


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


def reservation(demand: dict[str, Any] | None, get) -> tuple[int, int, int]:
    """What a call of ``demand`` holds: (tokens, nano-dollars), and its model's peak cost
    of one call (nano-dollars). ``get`` reads a counter (the peaks). The completion is
    the request's own cap when it sets one, else the largest one that model produced
    today or yesterday (UTC); the cost is the price table's for those tokens when the
    model has a price, else that model's largest cost of one call (never seen: 0)."""
    if demand is None:
        return 0, 0, 0
    peaks = demand["peaks"]
    completion = demand["completion"]
    if completion < 0:
        completion = max(get(peaks[0]), get(peaks[1]))
    peak_cost = max(get(peaks[2]), get(peaks[3]))
    price = demand["price"]
    nano = peak_cost if price is None else price[0] + math.ceil(completion * price[1])
    return demand["prompt"] + completion, nano, peak_cost


def held_key(key: str) -> str:
    """Where the reservations of the calls in flight under counter ``key`` live."""
    return f"{key}/held"


def counter_stats(check: dict[str, Any], used: int, held: int, now: float):
    """(reset, remaining, passes) of a counter check that ``used`` and ``held`` fill:
    refused by reservations alone, it frees up as those calls end."""
    limit = check["limit"]
    passes = used + held < limit
    reset = check["reset"] if passes or used >= limit else now + HOLD_RETRY
    return reset, max(0, limit - used - held), passes


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
    moving = MovingWindowRateLimiter(storage)
    now, demand = plan["now"], plan.get("demand")
    stats, refused = [], []
    for index, check in enumerate(plan["checks"]):
        if check["kind"] == "window":
            item = KeyedItem(check["limit"], check["expiry"])
            reset, remaining = moving.get_window_stats(item, check["key"])
            passes = remaining >= 1
        else:
            used = storage.get(check["key"])
            held = _held(storage, held_key(check["key"]), now)
            reset, remaining, passes = counter_stats(check, used, held, now)
        stats.append([reset, remaining])
        if not passes:
            refused.append(index)
    if refused:
        return {"refused": worst(refused, stats), "stats": stats}
    reserved = reservation(demand, storage.get)
    if plan.get("hit", True):
        for index, check in enumerate(plan["checks"]):
            if check["kind"] != "window":
                amount = reserved[1] if check["unit"] == "usd" else reserved[0]
                if demand is not None and amount:
                    _hold(storage, held_key(check["key"]), demand, amount, now)
                continue
            item = KeyedItem(check["limit"], check["expiry"])
            if not moving.hit(item, check["key"]):  # only on storages shared without a lock
                stats[index][1] = 0
                return {"refused": index, "stats": stats}
            hit_made(stats[index], check, now)
    answer = {"refused": None, "stats": stats}
    if demand is not None:
        answer["reserved"] = list(reserved)
    return answer


def settle(storage: Storage, settlement: dict[str, Any]) -> None:
    """A call's end on the counters: its reservations dropped (``release``: ``[key, call
    id, amount]``), its tokens and cost added (``add``: ``[key, expiry, amount]``), its
    model's peaks raised (``peaks``: ``[key, expiry, value]``); and a correction of an
    estimate (``adjust``: ``[key, amount]``, added only to a counter that exists: one
    that does not will be rebuilt from the corrected log)."""
    lock = getattr(storage, "lock", None)
    with lock if lock is not None else contextlib.nullcontext():
        release = getattr(storage, "release", None)
        for key, ident, amount in settlement.get("release", ()):
            if release is not None:
                release(key, ident)
            else:  # a storage of limits' own: the reservations are a plain counter
                storage.incr(key, 1, -amount)
        for key, expiry, amount in settlement.get("add", ()):
            if amount:
                storage.incr(key, expiry, amount)
        for key, amount in settlement.get("adjust", ()):
            if amount and storage.get(key):
                storage.incr(key, 1, amount)
        raise_to = getattr(storage, "raise_to", None)
        for key, expiry, value in settlement.get("peaks", ()):
            if raise_to is not None:
                raise_to(key, expiry, value)
            else:
                current = storage.get(key)
                if value > current:
                    storage.incr(key, expiry, value - current)


def _held(storage: Storage, key: str, now: float) -> int:
    held = getattr(storage, "held", None)
    return held(key, now) if held is not None else max(0, storage.get(key))


def _hold(storage: Storage, key: str, demand: dict[str, Any], amount: int, now: float) -> None:
    hold = getattr(storage, "hold", None)
    if hold is not None:
        hold(key, demand["id"], amount, now + demand["lease"])
    else:
        storage.incr(key, demand["lease"], amount)
