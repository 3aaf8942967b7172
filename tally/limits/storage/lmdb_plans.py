"""A whole admission plan in one write transaction on the instance's counter file:
:mod:`tally.limits.engine`'s decision, as :mod:`tally.limits.storage.redis_plans` runs it on
Redis.

The engine asks ``limits``' strategies, which ask the storage: for the shipped default
(one moving window) that is a window read and then a hit, each its own storage call
re-entering the transaction and reading the window again. Here the same decision reads
each counter once and writes each window hit once, inside one transaction
(tally/limits/storage/lmdb_file.py): the request path's share of limiting
(docs/benchmarks.md). The tests hold it to the engine's answers on the in-process
storage, plan by plan (tests/limits/test_lmdb.py). Everything else (the console's
status, resets, rebuilding from the log) goes through the storage's ``limits`` API.
"""

from __future__ import annotations

from typing import Any

from tally.limits.engine import (
    claims,
    counter_stats,
    held_key,
    hit_made,
    reservation,
    worst,
)
from tally.limits.storage.lmdb_file import LMDBStorage


class LMDBPlans:
    """Runs admission plans and usage additions on an :class:`LMDBStorage`, one
    transaction each."""

    def __init__(self, storage: LMDBStorage):
        self.storage = storage

    def evaluate(self, plan: dict[str, Any]) -> dict[str, Any]:
        """The engine's answer to ``plan`` (see :func:`tally.limits.engine.evaluate`)."""
        storage = self.storage
        now = plan["now"]
        with storage.lock:
            if plan.get("resets") or plan.get("markers") or plan.get("ready"):
                claimed = claims(storage, plan)
                if claimed is not None:
                    return claimed
            stats, refused, windows = [], [], []
            for index, check in enumerate(plan["checks"]):
                limit = check["limit"]
                if check["kind"] == "window":
                    expiry = check["expiry"]
                    hits = storage.live_hits(check["key"], now - expiry)
                    windows.append((index, hits))
                    reset, remaining = (hits[0] if hits else now) + expiry, limit - len(hits)
                    passes = remaining >= 1
                else:
                    used = storage.counter(check["key"], now)
                    held = storage.held(held_key(check["key"]), now)
                    reset, remaining, passes = counter_stats(check, used, held, now)
                stats.append([reset, remaining])
                if not passes:
                    refused.append(index)
            if refused:
                return {"refused": worst(refused, stats), "stats": stats}
            demand = plan.get("demand")
            reserved = reservation(demand, lambda key: storage.counter(key, now))
            if plan.get("hit", True):
                for index, hits in windows:
                    check = plan["checks"][index]
                    storage.add_hits(check["key"], hits, check["expiry"], now)
                    hit_made(stats[index], check, now)
                if demand is not None:
                    until = now + demand["lease"]
                    for check in plan["checks"]:
                        if check["kind"] != "window":
                            amount = reserved[1] if check["unit"] == "usd" else reserved[0]
                            if amount:
                                storage.hold(held_key(check["key"]), demand["id"], amount, until)
        answer = {"refused": None, "stats": stats}
        if demand is not None:
            answer["reserved"] = list(reserved)
        return answer

    def settle(self, settlement: dict[str, Any]) -> None:
        """A call's end on the counters, in one transaction (tally.limits.engine.settle)."""
        storage = self.storage
        with storage.lock:
            for key, ident, _amount in settlement.get("release", ()):
                storage.release(key, ident)
            for key, expiry, amount in settlement.get("add", ()):
                if amount:
                    storage.incr(key, expiry, amount)
            for key, amount in settlement.get("adjust", ()):
                if amount and storage.counter(key, storage.clock()):
                    storage.incr(key, 1, amount)
            for key, expiry, value in settlement.get("peaks", ()):
                storage.raise_to(key, expiry, value)
