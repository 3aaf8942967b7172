"""Two Tally instances on loopback sharing PostgreSQL and Redis, as in production.

Each instance has its own instance folder, caches, connection pools and background
usage writer; the only things they share are the database and Redis. Skipped unless
TALLY_TEST_DATABASE_URL (PostgreSQL) and TALLY_TEST_REDIS_URL are set.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import func, select

from tally.keys.api_keys import create_api_key, revoke_api_key
from tally.models import RequestLog, UpstreamIdentifier
from tests.helpers.api import chat
from tests.helpers.limits import forget_counters, forget_redis_counters
from tests.helpers.rows import configure

pytestmark = pytest.mark.skipif(
    not (os.environ.get("TALLY_TEST_DATABASE_URL") and os.environ.get("TALLY_TEST_REDIS_URL")),
    reason="needs TALLY_TEST_DATABASE_URL (PostgreSQL) and TALLY_TEST_REDIS_URL",
)


@pytest.fixture
def instances(make_app, serve, upstream, tmp_path):
    """Instances A and B over HTTP, in production mode (background usage writes), limit
    counters emptied first."""
    servers = []
    for name in ("a", "b"):
        flask_app = make_app(
            INSTANCE_PATH=str(tmp_path / f"instance-{name}"),
            TALLY_UPSTREAM_URL=upstream.url,
            TALLY_RATELIMIT_STORAGE_URI=os.environ["TALLY_TEST_REDIS_URL"],
            TALLY_USAGE_WRITES="background",
        )
        server = serve(flask_app)
        server.flask_app = flask_app
        servers.append(server)
    a, b = servers
    forget_counters(a.flask_app)  # Redis is shared: no counts left by an earlier run
    with a.flask_app.extensions["tally"].sessions() as session:
        _, key = create_api_key(session, "shared", "test")
    a.key = b.key = key
    yield a, b
    for server in servers:
        writer = server.flask_app.extensions["tally"].usage
        writer.flush()
    forget_redis_counters(os.environ["TALLY_TEST_REDIS_URL"])


def flush(*servers) -> None:
    """Wait for both instances' background writers."""
    for server in servers:
        assert server.flask_app.extensions["tally"].usage.flush()


def test_a_config_change_on_a_is_used_by_b_from_the_next_request(instances, upstream):
    a, b = instances
    assert chat(b, user="u-1").status_code == 200  # B has the default config cached
    assert upstream.last.body["user"].startswith("tally_")
    configure(a.flask_app, prefix="acme", hash_mode="none")
    assert chat(b, user="u-1").status_code == 200
    assert upstream.last.body["user"] == "acme_u-1"


def test_b_checks_its_cached_config_in_the_admission_and_counts_a_stale_try_nothing(
    instances, upstream, monkeypatch
):
    """With a limit on Redis, B's cached config is checked by the admission's own round
    trip (no lookup through the cache's version first); when A changed it, B reads it
    again and admits the request once."""
    a, b = instances
    runtime = b.flask_app.extensions["tally"]
    assert chat(b, user="u-9").status_code == 200  # B has the key and the config cached
    looked_up = []
    real_get = runtime.cache.get
    monkeypatch.setattr(
        runtime.cache, "get", lambda k, load: looked_up.append(k) or real_get(k, load)
    )
    assert chat(b, user="u-9").status_code == 200
    assert "config" not in looked_up  # peeked, and checked in the admission
    configure(a.flask_app, prefix="acme", hash_mode="none")
    answer = chat(b, user="u-9")
    assert answer.status_code == 200 and upstream.last.body["user"] == "acme_u-9"
    assert looked_up.count("config") == 1  # the stale try, then read as usual
    assert answer.headers["X-RateLimit-Remaining"] == "997"  # three requests, three hits
    storage = runtime.limits.storage
    assert storage.get_moving_window("tally/msg/user:u-9", 1000, 86400)[1] == 3


def test_a_key_revoked_on_a_is_refused_by_b_at_once(instances):
    a, b = instances
    assert chat(b, user="u-1").status_code == 200  # B has the key cached
    with a.flask_app.extensions["tally"].sessions() as session:
        revoke_api_key(session, "shared", "test")
    response = chat(b, user="u-1")
    assert response.status_code == 401
    assert response.json()["error"]["message"] == "Incorrect or revoked API key."
    assert chat(a, user="u-1").status_code == 401


def test_usage_totals_are_exact_across_instances(instances):
    a, b = instances
    per_instance, users = 40, ["u-1", "u-2", "u-3"]

    def send(index: int) -> int:
        server = (a, b)[index % 2]
        return chat(server, user=users[index % len(users)]).status_code

    with ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(send, range(2 * per_instance)))
    assert statuses == [200] * (2 * per_instance)
    flush(a, b)
    with a.flask_app.extensions["tally"].sessions() as session:
        count, tokens, cost = session.execute(
            select(func.count(), func.sum(RequestLog.total_tokens), func.sum(RequestLog.cost))
        ).one()
        counts = session.scalars(select(UpstreamIdentifier.request_count)).all()
    assert count == 2 * per_instance
    assert tokens == 15 * 2 * per_instance  # the fake's usage: 15 tokens, $0.00042 a call
    assert cost == pytest.approx(0.00042 * 2 * per_instance)
    assert sorted(counts) == [26, 27, 27]
