"""Fixtures of the test identity provider (tests.helpers.identity_provider): its JWKS
server, Tally configured with it, and a --user-token key."""

from __future__ import annotations

import pytest

from tally.keys.api_keys import create_api_key
from tally.verification.idp import save_idp
from tests.helpers.identity_provider import ISSUER, ORIGIN, JwksServer


@pytest.fixture
def jwks():
    """The test identity provider's JWKS server."""
    server = JwksServer()
    yield server
    server.close()


@pytest.fixture
def idp(tally, jwks):
    """The served Tally configured with the test identity provider; returns the JWKS
    server (tokens: ``idp.token(...)``)."""
    with tally.flask_app.extensions["tally"].sessions() as session:
        save_idp(session, {"issuer": ISSUER, "jwks_url": jwks.url}, "test")
    return jwks


@pytest.fixture
def user_key(tally):
    """A --user-token key of the served Tally, with one allowed origin."""
    with tally.flask_app.extensions["tally"].sessions() as session:
        _, raw = create_api_key(session, "spa", "test", user_token=True, origins=[ORIGIN])
    return raw
