"""The app factory's fixtures, as Flask's tutorial has them: ``make_app`` (a factory of
apps on the test database), ``app``, ``client``, ``runner``, and ``db`` and ``make_key``
for arranging."""

from __future__ import annotations

import uuid

import pytest

from app import create_app
from tally.keys.api_keys import create_api_key
from tests.helpers.database import reset_database
from tests.helpers.settings import HASH_KEY, SECRET_KEY


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "manual_delivery: the test's apps run no sinks' delivery loop of their own "
        "(the test calls deliver_pass, with its own clock)",
    )


@pytest.fixture
def make_app(database_url, tmp_path, request):
    """Factory: an app on the test database, with settings overridden as given. Its
    sinks' events are delivered by a loop of its own (inline writes) unless the test is
    marked ``manual_delivery``."""
    apps = []
    manual = request.node.get_closest_marker("manual_delivery") is not None

    def factory(**overrides):
        settings = {
            "INSTANCE_PATH": str(tmp_path / "instance"),
            "TALLY_DATABASE_URL": database_url,
            "TALLY_HASH_KEY": HASH_KEY,
            "TALLY_SECRET_KEY": SECRET_KEY,
            "TESTING": True,
            "DEMO_TOKEN_DELAY": 0,
            "SINKS_DELIVERY_LOOP": not manual,
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
