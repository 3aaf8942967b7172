"""Fixtures of the sinks' tests: loopback receivers, and adding sinks."""

from __future__ import annotations

import pytest

from tally.sinks.admin import add_sink
from tests.helpers.receivers import Receiver

# the fake upstream with a generation endpoint, and a cut stream's estimated row
from tests.usage.test_reconcile import estimated, upstream  # noqa: F401


@pytest.fixture
def receiver():
    """A loopback receiver of every kind of sink."""
    found = Receiver()
    yield found
    found.close()


@pytest.fixture
def runtime_of():
    """The runtime of a served Tally."""
    return lambda server: server.flask_app.extensions["tally"]


@pytest.fixture
def sinks(tally, receiver):
    """A webhook, an OpenMeter and a Stripe sink on ``receiver``; the webhook's secret
    (generated) is given to the receiver to verify signatures with."""
    runtime = tally.flask_app.extensions["tally"]
    key = runtime.settings.secret_key
    with runtime.sessions() as session:
        _, secret = add_sink(session, key, "hook", "webhook", receiver.url + "/hook", "test")
        add_sink(session, key, "meter", "openmeter", receiver.url, "test", secret="om-token")
        add_sink(session, key, "bill", "stripe", receiver.url, "test", secret="sk_test_123")
    receiver.webhook_secret = secret
    return secret
