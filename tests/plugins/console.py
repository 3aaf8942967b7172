"""Fixtures for the console's tests: operators and logged-in console clients
(tests.helpers.console)."""

from __future__ import annotations

import uuid

import pytest
from argon2 import PasswordHasher

from tally.operators import accounts as operators
from tally.operators.accounts import create_operator
from tests.helpers.console import PASSWORD, Console


@pytest.fixture
def fast_passwords(monkeypatch):
    """Cheap argon2 parameters: the real ones cost a quarter second a hash, by design."""
    monkeypatch.setattr(
        operators, "hasher", PasswordHasher(time_cost=1, memory_cost=64, parallelism=1)
    )


@pytest.fixture
def make_operator(app, fast_passwords):
    """Factory: create an operator; returns its e-mail (password: PASSWORD)."""

    def factory(role: str = "admin", email: str | None = None) -> str:
        email = email or f"{role}-{uuid.uuid4().hex[:6]}@example.com"
        with app.extensions["tally"].sessions() as session:
            create_operator(session, email, role, PASSWORD, "test")
        return email

    return factory


@pytest.fixture
def make_console(app, make_operator):
    """Factory: a Console logged in with a new operator of ``role`` (None: logged out)."""

    def factory(role: str | None = "admin") -> Console:
        if role is None:
            return Console(app)
        email = make_operator(role)
        console = Console(app, email)
        response = console.login(email)
        assert response.status_code == 303, response.get_data(as_text=True)
        return console

    return factory


@pytest.fixture
def admin(make_console) -> Console:
    """A console client logged in as an admin."""
    return make_console("admin")


@pytest.fixture
def support(make_console) -> Console:
    """A console client logged in as a support agent."""
    return make_console("support")


@pytest.fixture
def tally_admin(tally, make_operator) -> Console:
    """An admin logged in to the console of the app ``tally`` serves over real HTTP (the
    calls made to ``tally`` show on its pages)."""
    email = make_operator("admin")
    console = Console(tally.flask_app, email)
    assert console.login(email).status_code == 303
    return console
