"""``limits``' own RedisStorage and strategies and Tally's admission script count in the
same keys, each seeing the other's hits: tally/limits/storage/redis_plans.py mirrors the
library's layout, and these fail when ``limits`` moves it (or leaves the checked range)."""

from __future__ import annotations

import logging
import os
import time
import uuid
from importlib import metadata

import pytest
from limits.storage import RedisStorage, storage_from_string
from limits.strategies import FixedWindowRateLimiter, MovingWindowRateLimiter

from tally.limits import engine
from tally.limits.engine import KeyedItem
from tally.limits.storage import redis_plans
from tally.limits.storage.redis_plans import RedisPlans, plans_for, supported

REDIS_URL = os.environ.get("TALLY_TEST_REDIS_URL")
needs_redis = pytest.mark.skipif(not REDIS_URL, reason="needs TALLY_TEST_REDIS_URL")


@pytest.fixture
def redis():
    """limits' own storage on the test Redis; the test's keys are removed afterwards."""
    storage = storage_from_string(REDIS_URL)
    storage.test_prefix = f"guard/{uuid.uuid4().hex}"
    yield storage
    connection = storage.get_connection()
    for key in connection.scan_iter(f"{storage.key_prefix}:{storage.test_prefix}*"):
        connection.delete(key)


def window(key: str, limit: int = 3, expiry: int = 60) -> dict:
    """A moving-window check of the admission plan."""
    return {"kind": "window", "key": key, "limit": limit, "expiry": expiry, "reset": 0.0}


def counter(key: str, limit: int = 100, reset: float = 9e9) -> dict:
    """A usage counter check of the admission plan."""
    return {
        "kind": "counter",
        "unit": "tokens",
        "key": key,
        "limit": limit,
        "expiry": 3600,
        "reset": reset,
    }


def admit(plans: RedisPlans, *checks: dict, now: float | None = None, hit: bool = True):
    """The script's answer to a plan of ``checks`` at ``now`` (default: the wall clock,
    which limits' own calls use)."""
    plan = {"checks": list(checks), "now": time.time() if now is None else now, "hit": hit}
    return plans.evaluate(plan)


@needs_redis
def test_limits_sees_the_scripts_window_hits(redis):
    plans, key = plans_for(redis), f"{redis.test_prefix}/msg"
    moving, item = MovingWindowRateLimiter(redis), KeyedItem(3, 60)
    first = time.time()
    for _ in range(2):
        assert admit(plans, window(key), now=first)["refused"] is None
    stats = moving.get_window_stats(item, key)
    assert stats.remaining == 1 and stats.reset_time == pytest.approx(first + 60)
    assert moving.test(item, key)
    assert admit(plans, window(key))["refused"] is None
    assert not moving.test(item, key) and not moving.hit(item, key)
    assert 0 < redis.get_connection().ttl(redis.prefixed_key(key)) <= 60


@needs_redis
def test_the_script_sees_limits_window_hits(redis):
    plans, key = plans_for(redis), f"{redis.test_prefix}/msg"
    moving, item = MovingWindowRateLimiter(redis), KeyedItem(3, 60)
    assert moving.hit(item, key) and moving.hit(item, key)
    reset = moving.get_window_stats(item, key).reset_time
    looked = admit(plans, window(key), hit=False)
    assert looked == {"refused": None, "stats": [[pytest.approx(reset, abs=1e-3), 1]]}
    assert admit(plans, window(key)) == {
        "refused": None,
        "stats": [[pytest.approx(reset, abs=1e-3), 0]],
    }
    assert admit(plans, window(key))["refused"] == 0
    assert moving.get_window_stats(item, key).remaining == 0


@needs_redis
def test_old_hits_leave_the_window_for_both_and_the_list_stays_trimmed(redis):
    plans, key = plans_for(redis), f"{redis.test_prefix}/msg"
    moving, item = MovingWindowRateLimiter(redis), KeyedItem(3, 60)
    now = time.time()
    for ago in (200, 150, 120):  # all older than the 60 s window
        assert admit(plans, window(key), now=now - ago)["refused"] is None
    assert moving.get_window_stats(item, key).remaining == 3
    assert moving.hit(item, key)  # limits' own hit, after the script's
    assert admit(plans, window(key), hit=False)["stats"][0][1] == 2
    assert admit(plans, window(key))["refused"] is None
    stats = moving.get_window_stats(item, key)
    assert stats.remaining == 1 and stats.reset_time == pytest.approx(now + 60, abs=5)
    assert redis.get_connection().llen(redis.prefixed_key(key)) == 3  # trimmed to the limit


@needs_redis
def test_usage_counters_are_limits_counters(redis):
    plans, key = plans_for(redis), f"{redis.test_prefix}/tok"
    fixed, item = FixedWindowRateLimiter(redis), KeyedItem(100, 1)
    plans.settle({"add": [[key, 3600, 40]]})
    assert redis.get(key) == 40 and fixed.test(item, key)
    assert redis.get_expiry(key) == pytest.approx(time.time() + 3600, abs=5)
    redis.incr(key, 3600, 59)  # limits' own addition (the engine's add_usage)
    assert admit(plans, counter(key)) == {"refused": None, "stats": [[9e9, 1]]}
    plans.settle({"add": [[key, 3600, 1]]})
    assert not fixed.test(item, key)
    assert admit(plans, counter(key)) == {"refused": 0, "stats": [[9e9, 0]]}


@needs_redis
def test_markers_and_resets_are_limits_counters(redis):
    """The script's rebuild claims and reset marks are read by the engine on limits' own
    calls, and the other way round (the console and the CLI use those)."""
    plans, prefix = plans_for(redis), redis.test_prefix
    msg, marker = f"{prefix}/msg", f"{prefix}/m"
    claim = {"checks": [window(msg)], "now": time.time(), "markers": [marker]}
    assert plans.evaluate(claim) == {"unseeded": [marker], "pending": False}
    assert engine.evaluate(redis, claim) == {"unseeded": [], "pending": True}
    assert redis.get(marker) == 2
    engine.evaluate(redis, {"checks": [], "now": time.time(), "ready": [marker]})
    assert plans.evaluate(claim | {"now": time.time()})["refused"] is None
    reset = {"mark": f"{prefix}/reset", "at": 1000, "keys": [msg]}
    plans.evaluate({"checks": [], "now": time.time(), "resets": [reset]})
    assert redis.get(reset["mark"]) == 1000
    assert MovingWindowRateLimiter(redis).get_window_stats(KeyedItem(3, 60), msg).remaining == 3


@needs_redis
def test_the_engine_on_limits_calls_and_the_script_take_turns_on_one_window(redis):
    """Call by call (a Cluster, or a limits release outside the checked range) and the
    script may meet on the same counters during a rolling upgrade: they agree."""
    plans, key = plans_for(redis), f"{redis.test_prefix}/msg"
    answers = []
    for turn in range(4):
        plan = {"checks": [window(key)], "now": time.time()}
        answer = plans.evaluate(plan) if turn % 2 else engine.evaluate(redis, plan)
        answers.append((answer["refused"], answer["stats"][0][1]))
    assert answers == [(None, 2), (None, 1), (None, 0), (0, 0)]


def test_the_installed_limits_is_one_the_script_was_checked_against():
    installed = metadata.version("limits")
    assert supported(), f"check tally/limits/storage/redis_plans.py against limits {installed}"


@pytest.mark.parametrize("version", ["4.7.3", "5.0.0", "6.0.0", "7.2"])
def test_outside_its_range_admissions_run_through_limits_own_calls(caplog, monkeypatch, version):
    storage = RedisStorage("redis://127.0.0.1:1")  # never reached: nothing is sent
    monkeypatch.setattr(redis_plans.metadata, "version", lambda name: version)
    with caplog.at_level(logging.WARNING):
        assert plans_for(storage) is None
    [record] = caplog.records
    assert record.levelname == "WARNING"
    assert f"limits {version} is outside" in record.getMessage()
    assert "tally.limits.storage.redis_plans" in record.getMessage()


def test_within_its_range_redis_gets_the_script():
    assert isinstance(plans_for(RedisStorage("redis://127.0.0.1:1")), RedisPlans)
