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

from tally.limits.engine import claims, hit_made, worst
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
                    reset, remaining = check["reset"], max(0, limit - used)
                    passes = used < limit
                stats.append([reset, remaining])
                if not passes:
                    refused.append(index)
            if refused:
                return {"refused": worst(refused, stats), "stats": stats}
            if plan.get("hit", True):
                for index, hits in windows:
                    check = plan["checks"][index]
                    storage.add_hits(check["key"], hits, check["expiry"], now)
                    hit_made(stats[index], check, now)
        return {"refused": None, "stats": stats}

    def add_usage(self, additions: list[list[Any]]) -> None:
        """Add a call's tokens and cost to their counters, in one transaction."""
        storage = self.storage
        with storage.lock:
            for key, expiry, amount in additions:
                if amount:
                    storage.incr(key, expiry, amount)
