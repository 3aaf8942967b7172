"""The default storage under a real gunicorn: every worker counts in the instance's
counter file (tally+lmdb://), so a limit of N holds exactly under concurrent load whatever the
worker count (per-process memory would let N per worker through)."""

from __future__ import annotations

import pytest

from tests.helpers.faults import fire
from tests.helpers.gunicorn import start_gunicorn, stop, tally_env
from tests.helpers.limits import set_limits


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
