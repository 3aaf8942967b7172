"""A request whose upstream identifier would be too long: refused with 400 before anything
goes upstream, the whole message and the code a client can act on."""

from __future__ import annotations

import pytest

from tests.helpers.api import BASE
from tests.helpers.rows import configure


@pytest.mark.parametrize(
    ("dialect", "field", "sent", "length", "limit"),
    [
        ("openrouter", "user", {"user": "u" * 200}, 265, 255),
        ("openai", "safety_identifier", {"safety_identifier": "u" * 10}, 75, 64),
    ],
)
def test_an_identifier_too_long_for_the_dialect_is_a_400(
    app, client, make_key, dialect, field, sent, length, limit
):
    configure(app, hash_mode="none", prefix="p" * 64, dialect=dialect)
    response = client.post(
        "/v1/chat/completions",
        json={**BASE, **sent},
        headers={"Authorization": f"Bearer {make_key()}"},
    )
    assert response.status_code == 400
    assert response.get_json() == {
        "error": {
            "message": f"The upstream identifier derived from {field} would be {length} "
            f"characters; the limit is {limit}. Send a shorter {field}, or ask the operator "
            "for a hash mode or a shorter prefix.",
            "type": "invalid_request_error",
            "param": field,
            "code": "identifier_too_long",
        }
    }
