"""tally+lmdb://, the file every worker of an instance counts in: the ``limits`` storage
API on a clock the test moves, whole plans atomic across processes, the sweep, a worker
that dies mid-transaction, and the API's limits and the console's login throttling
counting in the same file."""

from __future__ import annotations

import hashlib
import multiprocessing
import os

import pytest
from limits import RateLimitItemPerMinute
from limits.storage import storage_from_string
from limits.strategies import FixedWindowRateLimiter, MovingWindowRateLimiter

from tally.limits import engine
from tally.limits.storage.counter_file import create, remove
from tally.limits.storage.lmdb_file import LMDBStorage
from tally.limits.storage.lmdb_plans import LMDBPlans
from tests.helpers.api import chat
from tests.helpers.console import Console
from tests.helpers.limits import Clock, set_limits


@pytest.fixture
def path():
    """A fresh counter file, as gunicorn's master makes it."""
    made = create()
    yield made
    remove(made)


def test_the_scheme_is_registered_and_speaks_the_storage_api(path):
    clock = Clock(1000.0)
    storage = storage_from_string(f"tally+lmdb://{path}")
    assert isinstance(storage, LMDBStorage) and storage.check()
    storage.clock = clock
    item = RateLimitItemPerMinute(2)
    fixed, moving = FixedWindowRateLimiter(storage), MovingWindowRateLimiter(storage)
    assert [fixed.hit(item, "a") for _ in range(3)] == [True, True, False]
    assert storage.get_expiry(item.key_for("a")) == 1060.0
    assert moving.hit(item, "b")
    clock.advance(30)
    assert moving.hit(item, "b") and not moving.hit(item, "b")
    assert moving.get_window_stats(item, "b") == (1060.0, 0)
    clock.advance(30)  # the first hit is exactly 60 s old: still inside
    assert not moving.hit(item, "b")
    clock.advance(0.001)
    assert moving.hit(item, "b")
    clock.advance(30)  # the counter's minute is over
    assert storage.get(item.key_for("a")) == 0 and fixed.hit(item, "a")
    storage.clear(item.key_for("b"))
    assert moving.get_window_stats(item, "b").remaining == 2
    assert storage.reset() == 1


def test_seeded_hits_keep_their_times(path):
    clock = Clock(1000.0)
    storage = LMDBStorage(f"tally+lmdb://{path}", clock=clock)
    storage.seed_entries("w", [900.0, 950.0, 100.0], 120)  # 100.0 is out of the window
    assert storage.get_moving_window("w", 10, 120) == (900.0, 2)


def test_idle_keys_are_swept_a_batch_at_a_time(path):
    clock = Clock(0.0)
    storage = LMDBStorage(f"tally+lmdb://{path}", clock=clock)
    for index in range(150):
        storage.acquire_entry(f"w{index:03}", 10, 60)
        storage.incr(f"c{index:03}", 60)
    clock.advance(50)
    storage.acquire_entry("w000", 10, 60)  # w000 will keep one live hit of two
    assert storage.size() == 300
    clock.advance(50)  # every key but w000 is idle now
    storage.incr("tick", 600)
    assert 301 - 199 <= storage.size() < 301  # one batch (100 keys of each) per sweep
    storage.incr("tick", 600)
    assert storage.size() >= 102  # at most one sweep per 0.2 s
    for _ in range(3):
        clock.advance(1)
        storage.incr("tick", 600)
    assert storage.size() == 2  # tick, and w000 with only its live hit left
    assert storage.get_moving_window("w000", 10, 60) == (50.0, 1)
    with storage.lock:
        assert storage.live_hits("w000", 0.0).tolist() == [50.0]  # the stale one is gone


def _admit_many(path: str, count: int, answers) -> None:
    storage = LMDBStorage(f"tally+lmdb://{path}")
    for _ in range(count):
        plan = {
            "checks": [{"kind": "window", "key": "w", "limit": 50, "expiry": 600}],
            "markers": [],
            "resets": [],
            "now": storage.clock(),
        }
        answers.put(engine.evaluate(storage, plan)["refused"] is None)


def test_a_limit_holds_exactly_across_processes(path):
    """Four processes admit 40 requests each against one limit of 50: exactly 50 pass."""
    answers = multiprocessing.get_context("fork").Queue()
    procs = [
        multiprocessing.get_context("fork").Process(target=_admit_many, args=(path, 40, answers))
        for _ in range(4)
    ]
    for proc in procs:
        proc.start()
    results = [answers.get(timeout=30) for _ in range(160)]
    for proc in procs:
        proc.join(10)
    assert results.count(True) == 50
    assert LMDBStorage(f"tally+lmdb://{path}").get_moving_window("w", 50, 600)[1] == 50


def test_api_limits_and_login_throttling_count_in_the_file(path, make_app, serve, upstream):
    flask_app = make_app(TALLY_UPSTREAM_URL=upstream.url, TALLY_LIMITS_DB=path)
    live = serve(flask_app)
    from tally.keys.api_keys import create_api_key

    with flask_app.extensions["tally"].sessions() as session:
        _, live.key = create_api_key(session, "web", "test")
    set_limits(flask_app, "tier:default", "messages=2", "daily_tokens=20")
    # the fake upstream's usage: 12 + 3 tokens a call
    assert [chat(live, user="u-1").status_code for _ in range(3)] == [200, 200, 429]
    held = LMDBStorage(f"tally+lmdb://{path}")
    assert held.get_moving_window("tally/msg/user:u-1", 2, 86400)[1] == 2
    console = Console(flask_app)
    statuses = [console.login("x@example.com", "wrong").status_code for _ in range(6)]
    assert statuses[-1] == 429  # the per-account limit, counted in the file
    with held.lock:
        keys = [key.decode() for key, _ in held.txn.cursor(db=held.counters)]
    # the account's key is a hash of the e-mail (tally/operators/throttle.py)
    account = hashlib.sha256(b"x@example.com").hexdigest()
    assert any(f"tally/login/account/{account}/" in key for key in keys)
    assert not any("x@example.com" in key for key in keys)
    [tokens] = [key for key in keys if key.startswith("tally/tok/d") and key.endswith("user:u-1")]
    assert held.get(tokens) == 30


def test_readyz_reads_the_counter_file(path, make_app, tmp_path):
    ready = make_app(TALLY_LIMITS_DB=path).test_client().get("/readyz")
    assert ready.status_code == 200 and ready.json["checks"]["limiter_storage"] == "ok"
    gone = make_app(TALLY_LIMITS_DB=str(tmp_path / "gone" / "limits")).test_client()
    answer = gone.get("/readyz")
    assert answer.status_code == 503 and answer.json["checks"]["limiter_storage"] == "unreachable"


def test_plans_answer_as_on_the_in_process_storage(path):
    """The same plans, step by step: the counter file's plan runner (the request path)
    and the engine on a second file answer as the engine on tally+memory:// does, which
    asks ``limits``' strategies: rebuild claims, windows filling up and draining,
    counters going over, a look that counts nothing, and a reset."""
    from tally.limits.storage.registry import LocalStorage

    clock = Clock(1000.0)
    other = create()
    try:
        runner = LMDBPlans(LMDBStorage(f"tally+lmdb://{path}", clock=clock))
        shared = LMDBStorage(f"tally+lmdb://{other}", clock=clock)
        local = LocalStorage(clock=clock)
        checks = [
            {"kind": "window", "key": "msg", "limit": 3, "expiry": 60, "reset": 0.0},
            {"kind": "window", "key": "rpm", "limit": 2, "expiry": 10, "reset": 0.0},
            {
                "kind": "counter",
                "unit": "tokens",
                "key": "tok",
                "limit": 100,
                "expiry": 0,
                "reset": 9e9,
            },
        ]
        answers = []
        for step in range(14):
            plan = {"checks": checks, "markers": [], "resets": [], "now": clock.now}
            if step == 0:
                plan["markers"] = ["msg/seeded"]
            if step == 1:
                plan["ready"] = ["msg/seeded"]
            if step == 9:
                plan["hit"] = False
            if step == 11:
                plan["resets"] = [{"mark": "reset/u", "at": 1_044_000, "keys": ["msg", "tok"]}]
            expected = engine.evaluate(local, plan)
            assert engine.evaluate(shared, plan) == expected, step
            assert runner.evaluate(plan) == expected, step
            answers.append(expected.get("refused", "claim"))
            if step == 6:
                engine.settle(local, {"add": [["tok", 3600, 150]]})
                engine.settle(shared, {"add": [["tok", 3600, 150]]})
                runner.settle({"add": [["tok", 3600, 150]]})
            clock.advance(4)
        # claimed; admitted until rpm (1) then messages (0) are full; the tokens (2) over,
        # freeing up last; the reset lifts messages and tokens; rpm fills up again
        assert answers == ["claim", None, None, 1, None, 0, 0, 2, 2, 2, 2, None, None, 1]
    finally:
        remove(other)


def test_a_failed_transaction_leaves_nothing_behind(path):
    storage = LMDBStorage(f"tally+lmdb://{path}")
    with pytest.raises(RuntimeError), storage.lock:
        storage.incr("k", 60)
        raise RuntimeError("the admission failed half-way")
    assert storage.get("k") == 0
    assert storage.incr("k", 60) == 1  # the next transaction starts cleanly


def _die_mid_transaction(path: str) -> None:
    storage = LMDBStorage(f"tally+lmdb://{path}")
    storage.lock.__enter__()
    storage.incr("k", 60, 5)
    os._exit(1)  # killed holding the writers' mutex, nothing committed


def test_a_worker_killed_mid_transaction_costs_nothing(path):
    storage = LMDBStorage(f"tally+lmdb://{path}")
    assert storage.incr("k", 60) == 1
    child = multiprocessing.get_context("fork").Process(target=_die_mid_transaction, args=(path,))
    child.start()
    child.join(10)
    assert child.exitcode == 1
    assert storage.incr("k", 60) == 2  # the mutex passed on; the dead one's 5 never landed


def test_a_dead_masters_directory_is_removed_by_the_next(tmp_path):
    """A master killed before its exit hook leaves its directory; the next one removes it
    (its process is gone), and never a live one's."""
    import subprocess
    from pathlib import Path

    dead = subprocess.Popen(["true"])
    dead.wait()
    base = Path(create()).parent.parent
    stale = base / f"tally-limits-{dead.pid}-x"
    stale.mkdir()
    live = Path(create())
    try:
        assert not stale.exists()
        assert live.parent.exists() and live.parent.name.startswith(f"tally-limits-{os.getpid()}-")
    finally:
        remove(str(live))
