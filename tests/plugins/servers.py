"""Real HTTP: the capturing fake upstream, any Flask app served on loopback (``serve``),
Tally served in front of the fake (``tally``), and Tally under the shipped gunicorn
config (``gunicorn``)."""

from __future__ import annotations

import pytest

from tally.keys.api_keys import create_api_key
from tests.helpers.gunicorn import start_gunicorn, stop, tally_env
from tests.helpers.loopback import LoopbackServer
from tests.helpers.upstream import FakeUpstream

DRAIN = 5.0  # seconds Tally's server waits for responses in flight when it stops


@pytest.fixture
def upstream():
    """The capturing fake upstream on a loopback port."""
    fake = FakeUpstream()
    yield fake
    fake.close()


@pytest.fixture
def serve():
    """Factory: serve a Flask app over real HTTP; returns the LoopbackServer. Each stops
    after the responses it is still sending, so a stream's row is written before the
    next test empties the database."""
    servers = []

    def factory(flask_app) -> LoopbackServer:
        server = LoopbackServer(flask_app, drain=DRAIN)
        servers.append(server)
        return server

    yield factory
    for server in servers:
        server.close()


@pytest.fixture
def tally(make_app, upstream, serve):
    """Tally over real HTTP in front of the fake upstream, with one API key."""
    flask_app = make_app(
        TALLY_UPSTREAM_URL=upstream.url,
        TALLY_UPSTREAM_API_KEY="sk-up-secret",
        TALLY_UPSTREAM_TIMEOUT="2",
        TALLY_MAX_BODY_BYTES="65536",
    )
    server = serve(flask_app)
    with flask_app.extensions["tally"].sessions() as session:
        _, server.key = create_api_key(session, "web", "test")
    server.flask_app = flask_app
    return server


@pytest.fixture
def gunicorn(database_url, upstream, app):
    """Tally under gunicorn with gunicorn.conf.py (one worker), in front of the fake."""
    proc = start_gunicorn(tally_env(database_url, TALLY_UPSTREAM_URL=upstream.url))
    try:
        yield proc
    finally:
        stop(proc)
