"""One admission decision over every limit of a request (tally/limits/engine.py), on the
in-process storage and on ``limits``' own: counter rebuild claims, the refusal that
counts, every window hit, and one decision at a time."""

from __future__ import annotations

import threading
import time

from limits.storage import storage_from_string

from tally.limits import engine
from tally.limits.storage.registry import LocalStorage
from tests.helpers.limits import Clock


def window(key: str, limit: int = 2, expiry: int = 60) -> dict:
    """A moving-window check."""
    return {"kind": "window", "key": key, "limit": limit, "expiry": expiry, "reset": 0.0}


def counter(key: str, limit: int = 100, reset: float = 9e9) -> dict:
    """A usage-counter check."""
    return {
        "kind": "counter",
        "unit": "tokens",
        "key": key,
        "limit": limit,
        "expiry": 0,
        "reset": reset,
    }


def test_a_plan_of_checks_alone_is_a_decision():
    storage = LocalStorage(clock=Clock())
    plan = {"checks": [window("w")], "now": storage.clock()}
    assert engine.evaluate(storage, plan) == {"refused": None, "stats": [[plan["now"] + 60, 1]]}


def test_on_limits_own_storage_which_has_no_lock():
    """What runs call by call on a Redis Cluster, or a limits release outside the one
    the Redis script was checked against."""
    storage = storage_from_string("memory://")
    assert not hasattr(storage, "lock")
    answers = [
        engine.evaluate(storage, {"checks": [window("w")], "now": time.time()}) for _ in range(3)
    ]
    assert [a["refused"] for a in answers] == [None, None, 0]
    engine.settle(storage, {"add": [["c", 60, 7]]})
    assert storage.get("c") == 7


def test_the_first_request_claims_a_counters_rebuild_and_the_next_waits_for_it():
    storage = LocalStorage(clock=Clock())
    plan = {"checks": [window("w")], "now": storage.clock(), "markers": ["ready", "m"]}
    engine.evaluate(storage, {"checks": [], "now": plan["now"], "ready": ["ready"]})
    assert engine.evaluate(storage, plan) == {"unseeded": ["m"], "pending": False}
    assert engine.evaluate(storage, plan) == {"unseeded": [], "pending": True}
    engine.evaluate(storage, {"checks": [], "now": plan["now"], "ready": ["m"]})
    assert engine.evaluate(storage, plan)["refused"] is None


def test_the_refusal_named_is_the_limit_that_frees_up_last():
    clock = Clock()
    storage = LocalStorage(clock=clock)
    day, minute = window("day", 1, 86400), window("minute", 1, 60)
    engine.evaluate(storage, {"checks": [day, minute], "now": clock.now})
    answer = engine.evaluate(storage, {"checks": [day, minute], "now": clock.now})
    assert answer == {"refused": 0, "stats": [[clock.now + 86400, 0], [clock.now + 60, 0]]}


def test_every_window_is_hit_wherever_it_stands_in_the_plan():
    clock = Clock()
    storage = LocalStorage(clock=clock)
    checks = [window("user"), counter("tokens"), window("key")]
    engine.evaluate(storage, {"checks": checks, "now": clock.now})
    assert storage.get_moving_window("key", 2, 60) == (clock.now, 1)
    assert storage.get_moving_window("user", 2, 60) == (clock.now, 1)


class RacedStorage(LocalStorage):
    """A shared storage without a lock, where another instance filled the window between
    this request's test and its hit."""

    def acquire_entry(self, key, limit, expiry, amount=1):
        """The window is full by now."""
        return False


def test_a_hit_lost_to_another_instance_is_a_refusal():
    storage = RacedStorage(clock=Clock())
    answer = engine.evaluate(storage, {"checks": [counter("t"), window("w")], "now": 0.0})
    assert answer == {"refused": 1, "stats": [[9e9, 100], [storage.clock() + 60, 0]]}


class SlowStorage(LocalStorage):
    """Reads a window slowly: requests arriving together would all test before any hits."""

    def get_moving_window(self, key, limit, expiry):
        """The window, read in 20 ms."""
        found = super().get_moving_window(key, limit, expiry)
        time.sleep(0.02)
        return found


def test_requests_arriving_together_are_decided_one_at_a_time():
    """Two requests of one user under a key's limit of one: the one refused keeps no hit
    in the user's window (decided apart, both would pass the tests, then one's key hit
    fail after its user hit)."""
    storage = SlowStorage(clock=Clock())
    checks = [window("user", 10), window("key", 1)]
    start = threading.Barrier(2)
    answers = []

    def request():
        start.wait()
        answers.append(engine.evaluate(storage, {"checks": checks, "now": storage.clock()}))

    threads = [threading.Thread(target=request) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(str(a["refused"]) for a in answers) == ["1", "None"]
    assert storage.get_moving_window("user", 10, 60)[1] == 1
