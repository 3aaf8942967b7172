"""An upstream identifier too long for the upstream: the 400 names the field the end user
came from, however the request named them."""

from __future__ import annotations

import pytest

from tests.helpers.api import BASE
from tests.helpers.rows import configure

ID = "u" * 200  # with a 64-character prefix: 265 characters, over the 255 allowed


@pytest.mark.parametrize(
    ("sent", "headers", "bound", "param"),
    [
        ({"user": ID}, {}, None, "user"),
        ({"safety_identifier": ID}, {}, None, "safety_identifier"),
        ({"identity": {"id": ID}}, {}, None, "identity.id"),
        ({}, {"X-Tally-User": ID}, None, "X-Tally-User"),
        ({"user": "someone-else"}, {}, ID, "key"),
    ],
)
def test_the_400_names_where_the_end_user_came_from(
    app, client, make_key, sent, headers, bound, param
):
    configure(app, hash_mode="none", prefix="p" * 64)
    key = make_key(user=bound)
    response = client.post(
        "/v1/chat/completions",
        json={**BASE, **sent},
        headers={"Authorization": f"Bearer {key}", **headers},
    )
    assert response.status_code == 400
    error = response.get_json()["error"]
    assert (error["param"], error["code"]) == (param, "identifier_too_long")
    assert error["message"].startswith(f"The upstream identifier derived from {param} would be 265")
