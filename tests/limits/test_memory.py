"""tally+memory:// on a clock the test moves: moving windows, counters, expiry, and the
sweep that forgets idle keys a batch at a time."""

from __future__ import annotations

from limits import RateLimitItemPerMinute
from limits.storage import storage_from_string
from limits.strategies import FixedWindowRateLimiter, MovingWindowRateLimiter

from tally.limits.storage.registry import SWEEP_BATCH, LocalStorage
from tests.helpers.limits import Clock


def test_moving_window_is_exact_to_the_second():
    clock = Clock(1000.0)
    storage = LocalStorage(clock=clock)
    item, moving = RateLimitItemPerMinute(2), MovingWindowRateLimiter(storage)
    assert moving.hit(item, "u")
    clock.advance(30)
    assert moving.hit(item, "u")
    assert not moving.hit(item, "u")
    assert moving.get_window_stats(item, "u") == (1060.0, 0)
    clock.advance(30)  # the first hit is exactly 60 s old: still inside
    assert not moving.hit(item, "u")
    clock.advance(0.001)
    assert moving.hit(item, "u")


def test_counters_expire_and_the_scheme_is_registered():
    assert isinstance(storage_from_string("tally+memory://"), LocalStorage)
    clock = Clock(0.0)
    storage = LocalStorage(clock=clock)
    fixed, item = FixedWindowRateLimiter(storage), RateLimitItemPerMinute(1)
    assert fixed.hit(item, "k") and not fixed.hit(item, "k")
    assert storage.get_expiry(item.key_for("k")) == 60.0
    clock.advance(60)
    assert storage.get(item.key_for("k")) == 0 and fixed.hit(item, "k")


def test_idle_keys_are_swept_a_batch_at_a_time():
    clock = Clock(0.0)
    storage = LocalStorage(clock=clock)
    for index in range(3 * SWEEP_BATCH):
        storage.acquire_entry(f"w{index}", 10, 60)
        storage.incr(f"c{index}", 60)
    assert storage.size() == 6 * SWEEP_BATCH
    clock.advance(120)  # every key is idle now
    storage.incr("tick", 600)
    assert storage.size() > 4 * SWEEP_BATCH  # one batch only per write
    for _ in range(10):
        storage.incr("tick", 600)
    assert storage.size() == 1
