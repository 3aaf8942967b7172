"""Two Tally instances sharing PostgreSQL and Redis: a limit holds for the pair, a
budget stops both, and a policy changed on one applies on the other within 1 s."""

from __future__ import annotations

import os
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest

from tally.keys.api_keys import create_api_key
from tests.helpers.api import chat
from tests.helpers.limits import forget_counters, forget_redis_counters, set_limits
from tests.helpers.payloads import completion

pytestmark = pytest.mark.skipif(
    not (os.environ.get("TALLY_TEST_DATABASE_URL") and os.environ.get("TALLY_TEST_REDIS_URL")),
    reason="needs TALLY_TEST_DATABASE_URL (PostgreSQL) and TALLY_TEST_REDIS_URL",
)


@pytest.fixture
def pair(make_app, serve, upstream, tmp_path):
    """Instances A and B on one database and one Redis, counters emptied first."""
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
    forget_counters(a.flask_app)
    with a.flask_app.extensions["tally"].sessions() as session:
        _, key = create_api_key(session, "shared", "test")
    a.key = b.key = key
    yield a, b
    for server in servers:  # rows still queued must land before the tables are emptied
        assert server.flask_app.extensions["tally"].usage.flush()
    forget_redis_counters(os.environ["TALLY_TEST_REDIS_URL"])


def test_a_limit_of_n_holds_for_the_pair(pair):
    a, b = pair
    set_limits(a.flask_app, "tier:default", "messages=20")
    user = f"u-{uuid.uuid4().hex[:6]}"

    def send(index: int) -> int:
        return chat((a, b)[index % 2], user=user).status_code

    with ThreadPoolExecutor(12) as pool:
        statuses = list(pool.map(send, range(60)))
    assert statuses.count(200) == 20
    assert statuses.count(429) == 40


def test_a_budget_stops_both(pair, upstream):
    a, b = pair
    set_limits(a.flask_app, "tier:default", "messages=none", "daily_budget=0.001")
    user = f"u-{uuid.uuid4().hex[:6]}"
    usage = {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2, "cost": 0.0004}
    statuses = []
    for index in range(5):
        upstream.reply(json=completion(usage=usage))
        statuses.append(chat((a, b)[index % 2], user=user).status_code)
    assert statuses == [200, 200, 200, 429, 429]  # $0.0012 spent once the third ended
    refused = chat(a, user=user)
    assert refused.json()["error"]["code"] == "budget_exceeded"
    assert chat(b, user=user).status_code == 429


def test_a_policy_change_on_a_applies_on_b_within_a_second(pair):
    a, b = pair
    user = f"u-{uuid.uuid4().hex[:6]}"
    assert chat(b, user=user).headers["X-RateLimit-Limit"] == "1000"  # B has it cached
    set_limits(a.flask_app, "tier:default", "messages=7")
    changed = time.monotonic()
    while chat(b, user=user).headers["X-RateLimit-Limit"] != "7":
        assert time.monotonic() - changed < 1.0
    set_limits(a.flask_app, f"user:{user}", "messages=0")
    assert chat(b, user=user).status_code == 429


def test_a_window_rebuilt_on_redis_keeps_its_hits_times(pair):
    """A policy change rebuilds the counters from the log (PRODUCT.md: a limit set again
    counts its whole window); on Redis the script puts the hits back at their times, so
    the window frees up when it would have, not a window after the change."""
    a, b = pair
    set_limits(a.flask_app, "tier:default", "messages=5")
    user = f"u-{uuid.uuid4().hex[:6]}"
    first = chat(a, user=user)
    assert first.status_code == 200
    time.sleep(2.5)
    assert chat(b, user=user).headers["X-RateLimit-Remaining"] == "3"
    assert a.flask_app.extensions["tally"].usage.flush()
    set_limits(a.flask_app, "tier:default", "messages=4")  # rebuilt from the two rows
    time.sleep(1.1)  # every process has the new policies
    after = chat(b, user=user)
    assert after.headers["X-RateLimit-Remaining"] == "1"
    reset = int(after.headers["X-RateLimit-Reset"])
    assert abs(reset - int(first.headers["X-RateLimit-Reset"])) <= 1
