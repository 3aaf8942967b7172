"""The built-in demo upstream, over HTTP at /demo/v1 and as Tally's default upstream."""

import json

from tests.support import request_rows


def test_demo_models_over_http(client):
    response = client.get("/demo/v1/models")
    assert [m["id"] for m in response.get_json()["data"]] == ["tally/demo-echo", "tally/demo-mini"]


def test_demo_completion_reports_usage_and_cost(client):
    response = client.post(
        "/demo/v1/chat/completions",
        json={
            "model": "tally/demo-echo",
            "user": "tally_abc",
            "messages": [{"role": "user", "content": "one two three"}],
        },
    )
    body = response.get_json()
    assert response.status_code == 200
    assert response.headers["X-Generation-Id"] == body["id"]
    text = body["choices"][0]["message"]["content"]
    assert "no model was called" in text and "tally_abc" in text and "one two three" in text
    usage = body["usage"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert usage["cost"] > 0


def test_demo_refuses_a_request_without_messages(client):
    response = client.post("/demo/v1/chat/completions", json={"model": "m"})
    assert response.status_code == 400
    assert response.get_json()["error"]["message"] == "messages must be a non-empty list."


def test_tally_uses_the_demo_when_no_upstream_is_set(client, make_key, app):
    key = make_key()
    response = client.post(
        "/v1/chat/completions",
        headers={"Authorization": f"Bearer {key}"},
        json={
            "model": "tally/demo-mini",
            "user": "user_2N4Z",
            "messages": [{"role": "user", "content": "hello"}],
        },
    )
    assert response.status_code == 200
    content = json.loads(response.data)["choices"][0]["message"]["content"]
    assert "Tally attached the upstream identifier tally_" in content
    assert "user_2N4Z" not in content  # the default hmac mode never sends the raw id
    [row] = request_rows(app)
    assert row.is_demo and row.prompt_tokens and row.cost > 0
