"""The default storage under a real gunicorn: every worker counts in the instance's
counter file (tally+lmdb://), so a limit of N holds exactly under concurrent load whatever the
worker count (per-process memory would let N per worker through)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from tests import faults
from tests.conftest import HASH_KEY
from tests.limits_support import set_limits


def start_gunicorn(database_url: str, upstream_url: str, workers: int, **extra: str):
    """gunicorn with the shipped config and ``workers`` workers, the default limit
    storage unless ``extra`` names one; returns the process with ``url`` set once it
    answers."""
    env = {
        "TALLY_DATABASE_URL": database_url,
        "TALLY_UPSTREAM_URL": upstream_url,
        "TALLY_HASH_KEY": HASH_KEY,
        "TALLY_SECRET_KEY": "test-secret-key",
        "TALLY_RATELIMIT_STORAGE_URI": "",  # unset: the instance's counter file
        **extra,
    }
    return faults.start_gunicorn(env, workers)


stop = faults.stop


def fire(url: str, key: str, users: list[str], total: int, threads: int = 24) -> list[int]:
    """``total`` chat requests at once from ``threads`` clients; their statuses."""
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}

    def one(index: int) -> int:
        headers = {"Authorization": f"Bearer {key}", "X-Tally-User": users[index % len(users)]}
        return requests.post(
            url + "/v1/chat/completions", json=body, headers=headers, timeout=30
        ).status_code

    with ThreadPoolExecutor(threads) as pool:
        return list(pool.map(one, range(total)))


@pytest.mark.parametrize("workers", [2, 4])
def test_a_limit_of_n_holds_exactly_across_workers(workers, database_url, upstream, app, make_key):
    key = make_key()
    set_limits(app, "tier:default", "messages=25")
    set_limits(app, "key:" + key_name(app), "rpm=40")  # every user of the key together
    proc = start_gunicorn(database_url, upstream.url, workers)
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
    proc = start_gunicorn(database_url, upstream.url, 2)
    try:
        assert fire(proc.url, key, ["u-1"], 2, threads=1) == [200, 200]
    finally:
        stop(proc)  # graceful: the usage writer writes the two rows before it stops
    proc = start_gunicorn(database_url, upstream.url, 2)
    try:
        assert fire(proc.url, key, ["u-1"], 3, threads=1) == [200, 429, 429]
    finally:
        stop(proc)
