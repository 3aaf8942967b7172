"""Degraded serving (issue 12): the caches serve what they last knew for a bounded time
when the database fails; what they cannot serve is a 503 with Retry-After in OpenAI's
shape (the console: a plain page), logged once per outage; /readyz says degraded."""

from __future__ import annotations

import logging

import pytest
from sqlalchemy.exc import OperationalError

from blueprints import health
from tally.cache import Cache
from tally.errors import DatabaseUnavailable
from tally.proxy.openai_errors import error_headers, status_of
from tests.helpers.api import BASE
from tests.helpers.limits import set_limits
from tests.helpers.outage import unreachable_database


class Counter:
    """A version that never moves (a FileVersion, in memory)."""

    def read(self) -> int:
        return 0

    def bump(self) -> None:
        pass


def down() -> None:
    raise OperationalError("SELECT 1", {}, ConnectionRefusedError("connection refused"))


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_the_last_good_value_is_served_until_max_staleness_then_503():
    clock = Clock()
    cache = Cache(Counter(), max_age=1.0, clock=clock, max_staleness=300)
    assert cache.get("key", lambda: "v1") == "v1"
    clock.now += 5
    assert cache.get("key", down) == "v1"  # reload failed: the last good value
    clock.now += 290
    assert cache.get("key", down) == "v1"
    clock.now += 10  # 305 s since it was loaded
    with pytest.raises(DatabaseUnavailable):
        cache.get("key", down)
    clock.now += 1  # a failed load is not tried again for a second
    assert cache.get("key", lambda: "v2") == "v2"  # back: loaded afresh
    assert not cache.outage.down


def test_a_key_never_loaded_is_503_during_an_outage_and_not_a_500():
    cache = Cache(Counter(), clock=Clock())
    with pytest.raises(DatabaseUnavailable) as caught:
        cache.get("never-seen", down)
    assert status_of(caught.value) == 503
    assert error_headers(caught.value)["Retry-After"] == "5"


def test_a_bug_in_a_load_is_not_taken_for_an_outage():
    clock = Clock()
    cache = Cache(Counter(), clock=clock)
    cache.get("key", lambda: "v1")

    def broken():
        raise KeyError("a bug")

    clock.now += 5
    with pytest.raises(KeyError):
        cache.get("key", broken)


def test_an_outage_is_logged_once_and_the_database_is_not_hammered(caplog):
    clock = Clock()
    cache = Cache(Counter(), clock=clock)
    cache.get("key", lambda: "v1")
    clock.now += 2
    tries = []

    def counted_down():
        tries.append(1)
        down()

    with caplog.at_level(logging.WARNING, logger="tally.outage"):
        for _ in range(50):
            assert cache.get("key", counted_down) == "v1"
            clock.now += 0.05  # 2.5 s of requests
        clock.now += 1
        cache.get("key", lambda: "v2")
    assert len(tries) == 3  # one try a second, not one a request
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2
    assert messages[0].startswith("database unavailable (OperationalError")
    assert messages[1].startswith("database available again after")


def test_a_revoked_key_is_dropped_not_served_stale(app, make_key):
    clock = Clock()
    cache = Cache(Counter(), clock=clock)
    cache.get("key", lambda: "v1")
    clock.now += 2
    assert cache.get("key", lambda: None) is None
    clock.now += 2
    with pytest.raises(DatabaseUnavailable):
        cache.get("key", down)  # never served again, outage or not


def test_the_api_answers_503_with_retry_after_when_the_database_fails(app, make_key, monkeypatch):
    key = make_key()
    client = app.test_client()
    unreachable_database(monkeypatch, app)
    response = client.post(
        "/v1/chat/completions", json=BASE, headers={"Authorization": f"Bearer {key}"}
    )
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "5"
    assert response.json["error"]["code"] == "database_unavailable"
    assert response.headers["X-Request-Id"]


def test_known_keys_are_served_during_an_outage_and_new_users_too(app, make_key, monkeypatch):
    """A new end user is served (created later by the recording path) when no limit
    applies to them; when one does, its counters are rebuilt from the request log first,
    so the call waits for the database (503), never served unchecked."""
    key = make_key()
    client = app.test_client()

    def call(user: str):
        headers = {"Authorization": f"Bearer {key}", "X-Tally-User": user}
        return client.post("/v1/chat/completions", json=BASE, headers=headers)

    runtime = app.extensions["tally"]
    set_limits(app, "tier:default", "messages=none")
    assert call("u-1").status_code == 200  # the key, config and policies are loaded
    with monkeypatch.context() as outage:
        outage.setattr(runtime.cache, "max_age", 0.0)  # every lookup tries the database
        unreachable_database(outage, app)
        assert call("never-seen-before").status_code == 200  # no limit applies
    set_limits(app, "tier:default", "messages=1000")
    assert call("u-1").status_code == 200  # u-1's counter rebuilt from the log
    with monkeypatch.context() as outage:
        outage.setattr(runtime.cache, "max_age", 0.0)
        unreachable_database(outage, app)
        assert call("u-1").status_code == 200
        refused = call("never-seen-before")  # its messages counter cannot be rebuilt
        assert refused.status_code == 503
        assert refused.json["error"]["code"] == "database_unavailable"
        assert refused.headers["Retry-After"] == "5"
    assert call("never-seen-before").status_code == 200


def test_readyz_is_degraded_while_known_keys_can_be_served(app, make_key, monkeypatch):
    client = app.test_client()
    headers = {"Authorization": f"Bearer {make_key()}"}
    assert client.post("/v1/chat/completions", json=BASE, headers=headers).status_code == 200
    monkeypatch.setattr(health, "check_database", lambda engine: "unreachable")
    ready = client.get("/readyz")
    assert (ready.status_code, ready.json["status"]) == (200, "degraded")
    monkeypatch.setattr(app.extensions["tally"].cache, "max_staleness", 0.0)
    ready = client.get("/readyz")
    assert (ready.status_code, ready.json["status"]) == (503, "unavailable")


def test_the_console_shows_a_plain_503_page(app, admin, monkeypatch):
    unreachable_database(monkeypatch, app)
    response = admin.get("/keys")
    assert response.status_code == 503
    assert "Database unavailable" in response.get_data(as_text=True)
    assert response.headers["Retry-After"]
