"""The built-in demo upstream, over HTTP at /demo/v1 and as Tally's default upstream."""

import json
import time

import urllib3

from tally.demo import upstream as demo
from tests.helpers.rows import request_rows


def test_demo_models_over_http(client):
    response = client.get("/demo/v1/models")
    assert [m["id"] for m in response.get_json()["data"]] == [
        "tally/demo-echo",
        "tally/demo-mini",
    ]


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


def test_tally_serves_the_responses_api_from_the_demo(client, make_key, app):
    key = make_key()
    response = client.post(
        "/v1/responses",
        headers={"Authorization": f"Bearer {key}"},
        json={"model": "tally/demo-mini", "input": "hello there", "user": "user_2N4Z"},
    )
    assert response.status_code == 200
    body = json.loads(response.data)
    text = body["output"][0]["content"][0]["text"]
    assert "no model was called" in text and "hello there" in text
    [row] = request_rows(app)
    assert (row.endpoint, row.status) == ("responses", 200)
    assert row.prompt_tokens == body["usage"]["input_tokens"]
    assert row.cost == body["usage"]["cost"] > 0
    assert row.identifier.identifier in text  # the demo repeats what Tally attached


def test_a_demo_responses_stream_is_typed_events_ending_completed(client, make_key, app):
    app.config["DEMO_TOKEN_DELAY"] = 0
    key = make_key()
    response = client.post(
        "/v1/responses",
        headers={"Authorization": f"Bearer {key}"},
        json={
            "model": "tally/demo-mini",
            "input": [{"role": "user", "content": "hi"}],
            "stream": True,
        },
    )
    events = [e for e in response.data.split(b"\n\n") if e]
    kinds = [e.split(b"\n")[0].removeprefix(b"event: ").decode() for e in events]
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
    assert "response.output_text.delta" in kinds
    sequence = [json.loads(e.split(b"data: ", 1)[1])["sequence_number"] for e in events]
    assert sequence == list(range(len(events)))
    [row] = request_rows(app)
    assert (row.endpoint, row.stream, row.status, row.error_code) == ("responses", True, 200, None)
    assert row.completion_tokens == kinds.count("response.output_text.delta")


def test_tally_serves_embeddings_from_the_demo(client, make_key, app):
    key = make_key()
    response = client.post(
        "/v1/embeddings",
        headers={"Authorization": f"Bearer {key}"},
        json={"model": "tally/demo-embed", "input": ["a b", "a b", "c"]},
    )
    data = json.loads(response.data)["data"]
    assert len(data) == 3 and data[0]["embedding"] == data[1]["embedding"] != data[2]["embedding"]
    [row] = request_rows(app)
    assert (row.endpoint, row.prompt_tokens) == ("embeddings", 5)


def test_the_demo_answers_through_urllib3_piece_by_piece():
    client = demo.demo_client(5, token_delay=0.05)
    messages = [{"role": "user", "content": "hi"}]
    body = {"model": "tally/demo-echo", "stream": True, "messages": messages}
    started = time.perf_counter()
    response = client.post("/chat/completions", body, stream=True)
    assert (response.status, response.headers["content-type"]) == (200, "text/event-stream")
    pieces = response.stream()
    assert next(pieces) == b": TALLY DEMO PROCESSING\n\n"
    assert next(pieces).startswith(b'data: {"id": "gen-demo-')  # the role chunk, no delay
    first_word = next(pieces)
    assert 0.05 <= time.perf_counter() - started < 0.5  # one token delay, not the whole answer
    rest = b"".join(pieces)
    response.close()
    assert b'"content": "Hello"' in first_word
    assert rest.endswith(b"data: [DONE]\n\n")
    assert time.perf_counter() - started > 0.5  # the other words came one by one


def test_the_demo_answers_every_call_as_an_upstream_would():
    client = demo.demo_client(5, token_delay=0)
    models = client.get("/models")
    assert [m["id"] for m in json.loads(models.read())["data"]] == list(demo.MODELS)
    missing = client.post("/images/generations", {"model": "m", "prompt": "x"}, stream=False)
    assert missing.status == 404
    error = json.loads(missing.read())["error"]
    assert error["message"] == "The demo upstream has no POST /images/generations."
    answer = demo.DemoPool(0).urlopen(
        "POST", "/v1/chat/completions", body=b'{"model": "m"}', preload_content=False
    )
    assert isinstance(answer, urllib3.HTTPResponse)  # urllib3's own reading code runs
    assert (answer.status, answer.reason) == (400, "Bad Request")
