"""The default storage under a real gunicorn: every worker counts in the instance's
counter file (tally+lmdb://), so a limit of N holds exactly under concurrent load whatever the
worker count (per-process memory would let N per worker through)."""

from __future__ import annotations

import os
import threading

import pytest

from tests.helpers.faults import fire
from tests.helpers.gunicorn import start_gunicorn, stop, tally_env
from tests.helpers.limits import forget_redis_counters, set_limits
from tests.helpers.payloads import completion


def start(database_url: str, upstream_url: str, workers: int):
    """gunicorn with the shipped config, ``workers`` workers and the default limit
    storage; returns the process with ``url`` set once it answers."""
    env = tally_env(
        database_url,
        TALLY_UPSTREAM_URL=upstream_url,
        TALLY_RATELIMIT_STORAGE_URI="",  # unset: the instance's counter file
    )
    return start_gunicorn(env, workers)


@pytest.mark.parametrize("workers", [2, 4])
def test_a_limit_of_n_holds_exactly_across_workers(workers, database_url, upstream, app, make_key):
    key = make_key()
    set_limits(app, "tier:default", "messages=25")
    set_limits(app, "key:" + key_name(app), "rpm=40")  # every user of the key together
    proc = start(database_url, upstream.url, workers)
    try:
        assert fire(proc.url, key, ["warm"], 2 * workers) == [200] * (2 * workers)
        statuses = fire(proc.url, key, ["u-1"], 80)
        assert statuses.count(200) == 25
        assert statuses.count(429) == 55
        statuses = fire(proc.url, key, [f"k-{i}" for i in range(20)], 60)
        assert statuses.count(200) == 40 - 2 * workers - 25  # the key's minute is full
        assert statuses.count(429) == 60 - (40 - 2 * workers - 25)
    finally:
        stop(proc)


def key_name(flask_app) -> str:
    """The name of the only API key."""
    from sqlalchemy import select

    from tally.models import ApiKey

    with flask_app.extensions["tally"].sessions() as session:
        return session.scalars(select(ApiKey.name)).one()


def test_a_restart_does_not_hand_out_a_fresh_quota(database_url, upstream, app, make_key):
    """The counter file starts empty; counters are rebuilt from the request log."""
    set_limits(app, "tier:default", "messages=3")
    key = make_key()
    proc = start(database_url, upstream.url, 2)
    try:
        assert fire(proc.url, key, ["u-1"], 2, threads=1) == [200, 200]
    finally:
        stop(proc)  # graceful: the usage writer writes the two rows before it stops
    proc = start(database_url, upstream.url, 2)
    try:
        assert fire(proc.url, key, ["u-1"], 3, threads=1) == [200, 429, 429]
    finally:
        stop(proc)


def prime_and_fire(urls: list[str], key: str, upstream, calls: int = 50) -> list[int]:
    """One call that makes the model's cost known ($0.0004), then ``calls`` calls of the
    same user at once over ``urls`` in turn, each answered after 0.5 s; their statuses."""
    usage = {"prompt_tokens": 5, "completion_tokens": 5, "total_tokens": 10, "cost": 0.0004}
    upstream.reply(json=completion(usage=usage))
    assert fire(urls[0], key, ["payer"], 1, threads=1) == [200]
    for _ in range(calls):
        upstream.reply(json=completion(usage=usage), hang=0.5)
    statuses = []
    threads = []
    for index, url in enumerate(urls):
        share = calls // len(urls) + (index < calls % len(urls))
        thread = threading.Thread(
            target=lambda u=url, n=share: statuses.extend(fire(u, key, ["payer"], n, threads=n))
        )
        threads.append(thread)
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return statuses


@pytest.mark.parametrize("workers", [2, 4])
def test_a_budget_of_five_calls_holds_against_fifty_at_once(
    workers, database_url, upstream, app, make_key
):
    """The reservations live in the instance's counter file: every worker sees them."""
    set_limits(app, "tier:default", "messages=none", "daily_budget=0.002")
    key = make_key()
    proc = start(database_url, upstream.url, workers)
    try:
        statuses = prime_and_fire([proc.url], key, upstream)
    finally:
        stop(proc)
    assert statuses.count(200) == 4, statuses  # five served in all: $0.002
    assert statuses.count(429) == 46


@pytest.mark.skipif(
    not (os.environ.get("TALLY_TEST_DATABASE_URL") and os.environ.get("TALLY_TEST_REDIS_URL")),
    reason="needs TALLY_TEST_DATABASE_URL (PostgreSQL) and TALLY_TEST_REDIS_URL",
)
def test_two_instances_on_one_redis_hold_a_budget_of_five_calls(
    database_url, upstream, app, make_key, tmp_path
):
    redis_url = os.environ["TALLY_TEST_REDIS_URL"]
    forget_redis_counters(redis_url)
    set_limits(app, "tier:default", "messages=none", "daily_budget=0.002")
    key = make_key()
    procs = []
    try:
        for name in ("a", "b"):
            env = tally_env(
                database_url,
                TALLY_UPSTREAM_URL=upstream.url,
                TALLY_RATELIMIT_STORAGE_URI=redis_url,
                TALLY_INSTANCE_PATH=str(tmp_path / name),
            )
            procs.append(start_gunicorn(env, 2))
        statuses = prime_and_fire([p.url for p in procs], key, upstream)
    finally:
        for proc in procs:
            stop(proc)
        forget_redis_counters(redis_url)
    assert statuses.count(200) == 4, statuses
    assert statuses.count(429) == 46
