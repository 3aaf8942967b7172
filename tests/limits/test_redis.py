"""The admission plan as one Lua script on Redis gives the engine's answers, step by step,
on the keys and layouts ``limits``' own Redis storage reads."""

from __future__ import annotations

import os
import uuid

import pytest
from limits.storage import storage_from_string

from tally.limits import engine
from tally.limits.storage.redis_plans import RedisPlans, plans_for
from tally.limits.storage.registry import LocalStorage
from tests.helpers.limits import Clock

REDIS_URL = os.environ.get("TALLY_TEST_REDIS_URL")
pytestmark = pytest.mark.skipif(not REDIS_URL, reason="needs TALLY_TEST_REDIS_URL")


def _plan(prefix: str, now: float, **extra) -> dict:
    checks = [
        {"kind": "window", "key": f"{prefix}/msg", "limit": 3, "expiry": 60, "reset": 0.0},
        {
            "kind": "counter",
            "unit": "tokens",
            "key": f"{prefix}/tok",
            "limit": 100,
            "expiry": 3600,
            "reset": 9e9,
        },
    ]
    return {"checks": checks, "markers": [], "resets": [], "now": now, **extra}


def test_the_script_answers_as_the_engine_does():
    redis = storage_from_string(REDIS_URL)
    plans = plans_for(redis)
    assert isinstance(plans, RedisPlans)
    clock = Clock(2_000_000_000.0)  # in the future: Redis expires keys by its own clock
    local = LocalStorage(clock=clock)
    prefix = f"test/{uuid.uuid4().hex}"

    def both(**extra):
        plan = _plan(prefix, clock.now, **extra)
        expected = engine.evaluate(local, plan)
        assert plans.evaluate(plan) == expected
        return expected

    assert both(markers=[f"{prefix}/m"]) == {"unseeded": [f"{prefix}/m"], "pending": False}
    assert both(markers=[f"{prefix}/m"]) == {"unseeded": [], "pending": True}
    assert both(markers=[], ready=[f"{prefix}/m"])["refused"] is None
    assert both(markers=[f"{prefix}/m"])["refused"] is None  # ready now
    clock.advance(10)
    assert both()["stats"][0] == [2_000_000_060.0, 0]  # third hit: the window is full
    refused = both()
    assert refused["refused"] == 0 and refused["stats"][0] == [2_000_000_060.0, 0]
    assert both(hit=False)["refused"] == 0
    clock.advance(50.001)  # the first hit is more than 60 s old
    assert both()["refused"] is None
    for runner in (plans, local):
        adder = runner.settle if runner is plans else lambda a: engine.settle(local, a)
        adder({"add": [[f"{prefix}/tok", 3600, 150]]})
    clock.advance(60)
    over = both()
    assert over["refused"] == 1 and over["stats"][1] == [9e9, 0]
    # what limits' own storage reads back: the window's hits, the counter
    # (read with today's clock, the three hits stored "in the future" all count)
    assert redis.get_moving_window(f"{prefix}/msg", 3, 60) == (2_000_000_000.0, 3)
    assert redis.get(f"{prefix}/tok") == 150


def test_a_reset_applies_once():
    redis = storage_from_string(REDIS_URL)
    plans, clock = plans_for(redis), Clock(2_000_000_000.0)
    local = LocalStorage(clock=clock)
    prefix = f"test/{uuid.uuid4().hex}"
    for _ in range(3):
        plan = _plan(prefix, clock.now)
        assert plans.evaluate(plan) == engine.evaluate(local, plan)
    reset = [{"mark": f"{prefix}/reset", "at": 1000, "keys": [f"{prefix}/msg"]}]
    for _ in range(4):  # cleared by the first only: then 3 hits, then refused
        plan = _plan(prefix, clock.now, resets=reset)
        assert plans.evaluate(plan) == engine.evaluate(local, plan)
    assert plans.evaluate(_plan(prefix, clock.now, resets=reset))["refused"] == 0


def test_a_stale_cache_version_is_answered_before_anything_is_counted():
    """The script checks the tracking config's cache version first (the pipeline's
    admission does, instead of a GET of its own): a moved-on version counts nothing."""
    from tally.versions import RedisVersion

    redis = storage_from_string(REDIS_URL)
    plans, now = plans_for(redis), 2_000_000_000.0
    prefix = f"test/{uuid.uuid4().hex}"
    current = int(redis.get_connection().get(RedisVersion.KEY) or 0)
    assert plans.evaluate(_plan(prefix, now, version=str(current + 1))) == {"stale": True}
    assert redis.get_moving_window(f"{prefix}/msg", 3, 60)[1] == 0
    assert plans.evaluate(_plan(prefix, now, version=str(current)))["refused"] is None
    assert redis.get_moving_window(f"{prefix}/msg", 3, 60)[1] == 1
