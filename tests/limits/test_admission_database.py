"""A database error on the admission path is never the limit storage being down
(PRODUCT.md, Limits: "Bad strings"). The admission rebuilds counters from the request
log, in the database: when that fails the call is a 503 ``database_unavailable`` and goes
nowhere, even with TALLY_RATELIMIT_FAIL=open, which is for the limit storage alone (its
own failures still serve unchecked: tests/limits/test_outage.py). Once a NUL in a user id
made PostgreSQL refuse the rebuild's query, and the call was served past every limit."""

from __future__ import annotations

import os

import pytest

from tally.end_users.claims import EndUserClaim
from tally.errors import DatabaseUnavailable
from tally.keys.api_keys import authenticate, create_api_key
from tally.limits.admission import Admission, admit
from tests.helpers.api import chat
from tests.helpers.limits import forget_counters, set_limits
from tests.helpers.outage import unreachable_sessions

REDIS_URL = os.environ.get("TALLY_TEST_REDIS_URL")
ON_POSTGRES = bool(os.environ.get("TALLY_TEST_DATABASE_URL"))
USER = "ada"
NEEDS_REDIS = pytest.mark.skipif(not REDIS_URL, reason="needs TALLY_TEST_REDIS_URL")
STORAGES = ["memory", pytest.param("redis", marks=NEEDS_REDIS)]


@pytest.fixture(params=STORAGES)
def served(request, make_app, serve, upstream):
    """Tally failing open (the default) on the in-process storage or on Redis, with
    ``tier:default messages=5``."""
    overrides = {"TALLY_UPSTREAM_URL": upstream.url}
    if request.param == "redis":
        overrides["TALLY_RATELIMIT_STORAGE_URI"] = REDIS_URL
    flask_app = make_app(**overrides)
    forget_counters(flask_app)
    server = serve(flask_app)
    server.flask_app = flask_app
    with flask_app.extensions["tally"].sessions() as session:
        _, server.key = create_api_key(session, "web", "test")
    set_limits(flask_app, "tier:default", "messages=5")
    yield server
    forget_counters(flask_app)


def lose_counters(flask_app) -> None:
    """As after a restart of the limit storage: the next admission rebuilds them."""
    limits = flask_app.extensions["tally"].limits
    forget_counters(flask_app)
    limits.ready.clear()


def test_a_database_error_while_rebuilding_is_a_503_not_a_pass(served, upstream, monkeypatch):
    limits = served.flask_app.extensions["tally"].limits
    assert limits.fail == "open"
    first = chat(served, user=USER)
    assert (first.status_code, first.headers["X-RateLimit-Remaining"]) == (200, "4")
    lose_counters(served.flask_app)
    monkeypatch.setattr(limits, "sessions", unreachable_sessions(served.flask_app))
    refused = chat(served, user=USER)
    assert refused.status_code == 503, refused.text
    error = refused.json()["error"]
    assert (error["code"], error["type"], error["param"]) == (
        "database_unavailable",
        "api_error",
        None,
    )
    assert refused.headers["Retry-After"] == "5"
    assert len(upstream.requests) == 1  # the 503 never went upstream
    assert limits.unavailable_count == 0  # not taken for the limit storage failing
    monkeypatch.undo()
    lose_counters(served.flask_app)  # the refused call's rebuild claim goes with them
    after = chat(served, user=USER)
    assert (after.status_code, after.headers["X-RateLimit-Remaining"]) == (200, "3")


def test_a_refusal_for_its_body_stays_a_400_while_the_rebuild_fails(served, upstream, monkeypatch):
    """Headers for an answer that does not go upstream are only read: without them."""
    limits = served.flask_app.extensions["tally"].limits
    assert chat(served, user=USER).status_code == 200
    lose_counters(served.flask_app)
    monkeypatch.setattr(limits, "sessions", unreachable_sessions(served.flask_app))
    refused = chat(served, user=USER, messages=[])
    assert refused.status_code == 400
    assert refused.json()["error"]["param"] == "messages"
    assert "X-RateLimit-Remaining" not in refused.headers
    assert len(upstream.requests) == 1 and limits.unavailable_count == 0


@pytest.mark.skipif(not ON_POSTGRES, reason="a NUL is refused by PostgreSQL, kept by SQLite")
def test_a_user_id_postgresql_refuses_is_never_admitted_unchecked(served, upstream):
    """The API refuses a NUL before the admission; were one to reach it, the rebuild's
    query fails (DataError) and the call is refused, not served past its limits."""
    limits = served.flask_app.extensions["tally"].limits
    key = _key(served)
    with pytest.raises(DatabaseUnavailable):
        admit(limits, key, EndUserClaim("pg\x00evil", "user"), Admission())
    assert limits.unavailable_count == 0


def test_a_user_id_no_driver_can_encode_is_never_admitted_unchecked(served, upstream):
    """A lone surrogate cannot be sent to any database (nor to Redis): the error is a bug
    to see, not the storage being down, so the admission raises it."""
    limits = served.flask_app.extensions["tally"].limits
    with pytest.raises(UnicodeEncodeError):
        admit(limits, _key(served), EndUserClaim("evil\ud800", "user"), Admission())
    assert limits.unavailable_count == 0


def _key(server):
    """The served Tally's key, as the API authenticates it."""
    with server.flask_app.extensions["tally"].sessions() as session:
        return authenticate(session, server.key)
