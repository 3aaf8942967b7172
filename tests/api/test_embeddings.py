"""POST /v1/embeddings over real HTTP: the end user attached (``user`` in every dialect
but orq: embeddings have no safety_identifier nor prompt_cache_key) and the call
recorded with its endpoint and tokens."""

import pytest

from tests.helpers.api import EMBEDDINGS_BODY, embed
from tests.helpers.payloads import embedding_answer
from tests.helpers.rows import configure, only_refusal, request_rows


@pytest.mark.parametrize(
    ("dialect", "stamped"),
    [
        ("openrouter", {"user": "tally_user_2N4Z"}),
        ("openai", {"user": "tally_user_2N4Z"}),
        ("compatible", {"user": "tally_user_2N4Z"}),
        ("orq", {"identity": {"id": "tally_user_2N4Z"}}),
    ],
)
def test_upstream_receives_exactly_the_stamped_body(tally, upstream, dialect, stamped):
    configure(tally.flask_app, hash_mode="none", dialect=dialect, cache_key="on")
    upstream.reply(json=embedding_answer(2))
    response = embed(tally, user="user_2N4Z", prompt_cache_key="x", safety_identifier="y")
    assert response.status_code == 200, response.text
    assert upstream.last.path == "/api/v1/embeddings"
    assert upstream.last.body == {**EMBEDDINGS_BODY, **stamped}


def test_the_answer_is_relayed_and_the_call_recorded(tally, upstream):
    configure(tally.flask_app, hash_mode="none")
    upstream.reply(json=embedding_answer(2, {"prompt_tokens": 7, "total_tokens": 7}))
    response = embed(tally, identity={"id": "u1"}, encoding_format="float")
    assert response.json() == embedding_answer(2, {"prompt_tokens": 7, "total_tokens": 7})
    assert upstream.last.body["encoding_format"] == "float"
    [row] = request_rows(tally.flask_app)
    assert row.request_id == response.headers["X-Request-Id"]
    assert (row.endpoint, row.status, row.stream) == ("embeddings", 200, False)
    assert (row.prompt_tokens, row.completion_tokens, row.total_tokens) == (7, None, 7)
    assert row.model == "openai/text-embedding-3-small"
    assert row.user.external_id == "u1" and row.identifier.identifier == "tally_u1"


def test_stream_in_the_body_does_not_make_a_stream(tally, upstream):
    upstream.reply(json=embedding_answer())
    response = embed(tally, stream=True)
    assert response.headers["Content-Type"] == "application/json"
    [row] = request_rows(tally.flask_app)
    assert row.stream is False


@pytest.mark.parametrize(
    "value",
    ["", [], [""], [[]], [1.5], [True], {"text": "x"}, None, [["a"]]],
)
def test_bad_input_is_refused_naming_the_field_and_costs_nothing(tally, upstream, value):
    body = (
        {"model": EMBEDDINGS_BODY["model"]}
        if value is None
        else {**EMBEDDINGS_BODY, "input": value}
    )
    response = embed(tally, body)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["param"] == "input"
    assert error["message"].startswith("input must be a non-empty string")
    assert upstream.requests == []
    only_refusal(tally.flask_app, response, 400, "invalid_request_error", "embeddings")


@pytest.mark.parametrize("value", ["one text", ["a", "b"], [1, 2, 3], [[1, 2], [3]]])
def test_every_input_form_is_taken(tally, upstream, value):
    upstream.reply(json=embedding_answer())
    assert embed(tally, input=value).status_code == 200
    assert upstream.last.body["input"] == value
