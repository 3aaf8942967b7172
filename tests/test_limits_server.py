"""The counter server and its client storage in one process: every ``limits`` storage
call and whole plans go through the socket, and the console's login throttling
(flask-limiter) counts there too."""

from __future__ import annotations

import tempfile
import threading
from pathlib import Path

import pytest
from limits import RateLimitItemPerMinute
from limits.storage import storage_from_string
from limits.strategies import FixedWindowRateLimiter, MovingWindowRateLimiter

from tally.limits.server import serve
from tally.limits.storage import LocalStorage, SocketStorage
from tests.console_client import Console
from tests.limits_support import set_limits
from tests.support import chat


@pytest.fixture
def server():
    """A counter server on a thread; yields (socket path, the storage it holds)."""
    directory = tempfile.mkdtemp(prefix="tally-limits-test-")  # short: a socket path
    path = str(Path(directory, "limits.sock"))
    storage, stop = LocalStorage(), threading.Event()
    thread = threading.Thread(target=serve, args=(path, storage, stop), daemon=True)
    thread.start()
    while not Path(path).exists():
        stop.wait(0.01)
    yield path, storage
    stop.set()
    thread.join(5)


def test_the_scheme_is_registered_and_speaks_the_storage_api(server):
    path, held = server
    storage = storage_from_string(f"tally+unix://{path}")
    assert isinstance(storage, SocketStorage) and storage.check()
    item = RateLimitItemPerMinute(2)
    fixed, moving = FixedWindowRateLimiter(storage), MovingWindowRateLimiter(storage)
    assert [fixed.hit(item, "a") for _ in range(3)] == [True, True, False]
    assert [moving.hit(item, "b") for _ in range(3)] == [True, True, False]
    assert moving.get_window_stats(item, "b").remaining == 0
    assert storage.get(item.key_for("a")) == 3 == held.get(item.key_for("a"))
    storage.clear(item.key_for("a"))
    assert fixed.test(item, "a")
    assert storage.reset() >= 1


def test_api_limits_and_login_throttling_count_in_the_server(server, make_app, serve, upstream):
    path, held = server
    flask_app = make_app(TALLY_UPSTREAM_URL=upstream.url, TALLY_LIMITS_SOCKET=path)
    live = serve(flask_app)
    from tally.services.keys import create_api_key

    with flask_app.extensions["tally"].sessions() as session:
        _, live.key = create_api_key(session, "web", "test")
    set_limits(flask_app, "tier:default", "messages=2")
    assert [chat(live, user="u-1").status_code for _ in range(3)] == [200, 200, 429]
    assert held.get_moving_window("tally/msg/user:u-1", 2, 86400)[1] == 2
    console = Console(flask_app)
    statuses = [console.login("x@example.com", "wrong").status_code for _ in range(6)]
    assert statuses[-1] == 429  # the per-account limit, counted in the server
    assert any("x@example.com" in key for key in held._counters)


def test_readyz_checks_the_counter_server(server, make_app, tmp_path):
    path, _held = server
    ready = make_app(TALLY_LIMITS_SOCKET=path).test_client().get("/readyz")
    assert ready.status_code == 200 and ready.json["checks"]["limiter_storage"] == "ok"
    gone = make_app(TALLY_LIMITS_SOCKET=str(tmp_path / "gone.sock")).test_client().get("/readyz")
    assert gone.status_code == 503 and gone.json["checks"]["limiter_storage"] == "unreachable"


def test_usage_sent_without_waiting_counts_before_the_next_request(
    server, make_app, serve, upstream
):
    path, held = server
    flask_app = make_app(TALLY_UPSTREAM_URL=upstream.url, TALLY_LIMITS_SOCKET=path)
    live = serve(flask_app)
    from tally.services.keys import create_api_key

    with flask_app.extensions["tally"].sessions() as session:
        _, live.key = create_api_key(session, "web", "test")
    set_limits(flask_app, "tier:default", "messages=none", "daily_tokens=20")
    # the fake upstream's usage: 12 + 3 tokens a call
    statuses = [chat(live, user="u-1").status_code for _ in range(3)]
    assert statuses == [200, 200, 429]
    tokens = [v for k, (v, _exp) in held._counters.items() if k.count("/") == 3]
    assert tokens == [30]  # tally/tok/dYYYY-MM-DD/user:u-1 (markers have one more part)
