"""Fixtures: a migrated database (SQLite, or PostgreSQL when TALLY_TEST_DATABASE_URL is
set), the app, a capturing fake upstream, Tally served over real HTTP (in-process, or
under gunicorn with the shipped config), and a guard that fails any test trying to reach
beyond the loopback interface."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from contextlib import contextmanager
from pathlib import Path

import pytest
import requests
from sqlalchemy import create_engine, delete, text, update
from sqlalchemy.engine import make_url
from werkzeug.serving import make_server
from werkzeug.wsgi import ClosingIterator

from app import create_app
from tally import schema
from tally.db import Base, make_engine
from tally.keys.api_keys import create_api_key
from tally.models import ConfigRevision
from tests.fakes import FakeUpstream

HASH_KEY = "test-hash-key"
pytest_plugins = ["tests.idp_support"]  # the test identity provider: jwks, idp, user_key


# --- the outside world is off limits ------------------------------------------------

_real_connect = socket.socket.connect


def _loopback_only(sock, address):
    host = address[0] if isinstance(address, tuple) else address
    if isinstance(host, str) and (host.startswith("127.") or host in ("::1", "localhost")):
        return _real_connect(sock, address)
    if sock.family == socket.AF_UNIX:
        return _real_connect(sock, address)
    raise AssertionError(f"test tried to reach {address!r}: only loopback is allowed")


@pytest.fixture(autouse=True)
def no_outside_network(monkeypatch):
    """Fail any unplanned outbound connection."""
    monkeypatch.setattr(socket.socket, "connect", _loopback_only)


# --- database ---------------------------------------------------------------------


@contextmanager
def empty_database(directory):
    """An empty database: a new SQLite file in ``directory``, or a new PostgreSQL database
    next to TALLY_TEST_DATABASE_URL (dropped afterwards)."""
    base = os.environ.get("TALLY_TEST_DATABASE_URL")
    if not base:
        yield "sqlite:///" + str(directory / f"tally-{uuid.uuid4().hex[:8]}.db")
        return
    name = f"tally_test_{uuid.uuid4().hex[:10]}"
    admin = create_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(base).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(scope="session")
def database_url(tmp_path_factory):
    """A fresh database migrated to head, for this test run."""
    with empty_database(tmp_path_factory.mktemp("db")) as url:
        engine = make_engine(url)
        schema.upgrade(engine)
        engine.dispose()
        yield url


def reset_database(engine) -> None:
    """Empty every table, keeping the default config revision 1 as migrated."""
    with engine.begin() as conn:
        for table in reversed(Base.metadata.sorted_tables):
            if table.name == "config_revisions":
                conn.execute(delete(table).where(table.c.id > 1))
            else:
                conn.execute(delete(table))
        conn.execute(
            update(ConfigRevision.__table__)
            .where(ConfigRevision.id == 1)
            .values(
                enabled=True,
                prefix="tally",
                hash_mode="hmac-sha256",
                hash_length=16,
                dialect="openrouter",
                cache_key=False,
                forward_profile=False,
                require_identity=False,
            )
        )
        if conn.dialect.name == "postgresql":  # ids start over, as they do on SQLite
            for table in Base.metadata.sorted_tables:
                if "id" not in table.c:  # the totals tables are keyed by their groups
                    continue
                conn.execute(
                    text(
                        f"SELECT setval(pg_get_serial_sequence('{table.name}', 'id'), "
                        f"COALESCE((SELECT MAX(id) FROM {table.name}), 0) + 1, false)"
                    )
                )


# --- app --------------------------------------------------------------------------


@pytest.fixture
def make_app(database_url, tmp_path):
    """Factory: an app on the test database, with settings overridden as given."""
    apps = []

    def factory(**overrides):
        settings = {
            "INSTANCE_PATH": str(tmp_path / "instance"),
            "TALLY_DATABASE_URL": database_url,
            "TALLY_HASH_KEY": HASH_KEY,
            "TALLY_SECRET_KEY": "test-secret-key",
            "TESTING": True,
            "DEMO_TOKEN_DELAY": 0,
            **overrides,
        }
        app = create_app(settings)
        apps.append(app)
        return app

    yield factory
    for app in apps:
        # a background writer's threads (rows, cost reconciliation) stop with the test
        app.extensions["tally"].usage.close(timeout=5)
        engine = app.extensions["tally"].engine
        if app.config["TALLY"].database_url == database_url:
            reset_database(engine)
        engine.dispose()


@pytest.fixture
def app(make_app):
    """The app on the built-in demo upstream."""
    return make_app()


@pytest.fixture
def client(app):
    """Flask's test client."""
    return app.test_client()


@pytest.fixture
def runner(app):
    """Flask's CLI runner."""
    return app.test_cli_runner()


@pytest.fixture
def db(app):
    """A session on the app's database, for arranging and asserting."""
    with app.extensions["tally"].sessions() as session:
        yield session


@pytest.fixture
def make_key(app):
    """Factory: mint an API key (optionally bound to an end user); returns the secret."""

    def factory(name: str | None = None, user: str | None = None) -> str:
        with app.extensions["tally"].sessions() as session:
            _, raw = create_api_key(
                session, name or f"key-{uuid.uuid4().hex[:8]}", "test", bound_external_id=user
            )
        return raw

    return factory


# --- real HTTP --------------------------------------------------------------------


@pytest.fixture
def upstream():
    """The capturing fake upstream on a loopback port."""
    fake = FakeUpstream()
    yield fake
    fake.close()


class LiveServer:
    """A WSGI app served by werkzeug on a loopback port, in a thread.

    ``close`` waits (a few seconds at most) for responses still being sent, so a stream's
    row is written before the next test empties the database.
    """

    def __init__(self, wsgi_app):
        self.app = wsgi_app
        self._in_flight = 0
        self._lock = threading.Condition()
        self._server = make_server("127.0.0.1", 0, self._counted, threaded=True)
        self.url = f"http://127.0.0.1:{self._server.server_port}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.02,), daemon=True
        )
        self._thread.start()

    def _counted(self, environ, start_response):
        with self._lock:
            self._in_flight += 1
        finished = []

        def done():
            if not finished:  # once, whether the body ran out or the server closed it
                finished.append(True)
                with self._lock:
                    self._in_flight -= 1
                    self._lock.notify_all()

        def body_then_done(body):
            try:
                yield from body
            finally:
                done()

        try:
            body = self.app(environ, start_response)
        except BaseException:
            done()
            raise
        return ClosingIterator(body_then_done(body), [getattr(body, "close", done), done])

    def close(self) -> None:
        """Stop serving, after the responses in flight have ended."""
        with self._lock:
            self._lock.wait_for(lambda: self._in_flight == 0, timeout=5)
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def serve():
    """Factory: serve a Flask app over real HTTP; returns the LiveServer."""
    servers = []

    def factory(flask_app) -> LiveServer:
        server = LiveServer(flask_app)
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
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {
        **os.environ,
        "TALLY_BIND": f"127.0.0.1:{port}",
        "TALLY_WORKERS": "1",
        "TALLY_DATABASE_URL": database_url,
        "TALLY_UPSTREAM_URL": upstream.url,
        "TALLY_HASH_KEY": HASH_KEY,
        "TALLY_SECRET_KEY": "test-secret-key",
    }
    env.pop("TALLY_USAGE_WRITES", None)  # as in production: background writes
    proc = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "--config", "gunicorn.conf.py", "wsgi:app"],
        cwd=Path(__file__).resolve().parent.parent,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    proc.url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                requests.get(proc.url + "/healthz", timeout=5)
                break
            except requests.RequestException:  # not listening yet, or the worker booting
                assert proc.poll() is None, "gunicorn exited at start"
                assert time.monotonic() < deadline, "gunicorn did not start"
                time.sleep(0.1)
        yield proc
    finally:
        if proc.poll() is None:
            proc.terminate()  # a graceful stop: the usage writer process goes too
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
