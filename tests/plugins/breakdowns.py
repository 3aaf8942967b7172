"""The ``workload`` fixture: tests.helpers.breakdowns's CALLS recorded with two API keys."""

from __future__ import annotations

import pytest

from tally.keys.api_keys import create_api_key
from tests.helpers.breakdowns import CALLS, record


@pytest.fixture
def workload(app):
    """CALLS recorded, with the API keys ``acme`` and ``globex``; returns the key ids."""
    with app.extensions["tally"].sessions() as session:
        key_ids = {name: create_api_key(session, name, "test")[0].id for name in ("acme", "globex")}
        record(session, CALLS, key_ids)
    return key_ids
