"""The official openai Python SDK, unchanged, pointed at Tally."""

import openai
import pytest

from tests.helpers.payloads import (
    chunks,
    completion,
    embedding_answer,
    response_events,
    response_object,
)
from tests.helpers.rows import configure, request_rows
from tests.helpers.waiting import wait_for


@pytest.fixture
def sdk(tally):
    return openai.OpenAI(base_url=f"{tally.url}/v1", api_key=tally.key, max_retries=0)


def test_sdk_chat_completion(sdk, tally, upstream):
    configure(tally.flask_app, hash_mode="sha256")
    upstream.reply(json=completion("Hello from upstream"))
    result = sdk.chat.completions.create(
        model="openai/gpt-4o-mini",
        messages=[{"role": "user", "content": "Hi"}],
        user="user_2N4Z",
    )
    assert result.choices[0].message.content == "Hello from upstream"
    assert result.usage.total_tokens == 15
    assert upstream.last.body["user"] == "tally_1d5c0679c4a70ef7"


def test_sdk_streaming(sdk, tally, upstream):
    upstream.reply(events=chunks(["Hel", "lo"]))
    stream = sdk.chat.completions.create(
        model="openai/gpt-4o-mini",
        messages=[{"role": "user", "content": "Hi"}],
        user="user_2N4Z",
        stream=True,
    )
    pieces = [c.choices[0].delta.content for c in stream if c.choices]
    assert "".join(p or "" for p in pieces) == "Hello"
    [row] = wait_for(lambda: request_rows(tally.flask_app))
    assert (row.stream, row.completion_tokens, row.status) == (True, 2, 200)


def test_sdk_streaming_with_usage(sdk, upstream):
    upstream.reply(events=chunks(["a"]))
    stream = sdk.chat.completions.create(
        model="openai/gpt-4o-mini",
        messages=[{"role": "user", "content": "Hi"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    last = list(stream)[-1]
    assert last.choices == [] and last.usage.total_tokens == 10


def test_sdk_extra_body_identity(sdk, tally, upstream):
    configure(tally.flask_app, dialect="orq", hash_mode="none")
    sdk.chat.completions.create(
        model="openai/gpt-4o-mini",
        messages=[{"role": "user", "content": "Hi"}],
        extra_body={"identity": {"id": "user-12345", "display_name": "John Smith"}},
    )
    assert upstream.last.body["identity"] == {"id": "tally_user-12345"}


@pytest.mark.parametrize(
    ("status", "error_class"),
    [(400, openai.BadRequestError), (402, openai.APIStatusError), (429, openai.RateLimitError)],
)
def test_sdk_sees_upstream_errors_as_its_own(sdk, upstream, status, error_class):
    upstream.reply(status=status, json={"error": {"message": "nope", "code": status}})
    with pytest.raises(error_class) as info:
        sdk.chat.completions.create(model="m", messages=[{"role": "user", "content": "Hi"}])
    assert info.value.status_code == status
    assert info.value.message.endswith("nope")


def test_sdk_with_a_bad_key(tally):
    client = openai.OpenAI(base_url=f"{tally.url}/v1", api_key="tly_wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        client.models.list()


def test_sdk_models(sdk):
    assert [m.id for m in sdk.models.list()] == ["openai/gpt-4o-mini"]


def test_sdk_responses_create(sdk, tally, upstream):
    configure(tally.flask_app, hash_mode="sha256", dialect="openai", cache_key="on")
    upstream.reply(json=response_object("Hello from upstream"))
    result = sdk.responses.create(model="openai/gpt-4o-mini", input="Hi", user="user_2N4Z")
    assert result.output_text == "Hello from upstream"
    assert result.usage.input_tokens == 11 and result.usage.output_tokens == 2
    assert upstream.last.body == {
        "model": "openai/gpt-4o-mini",
        "input": "Hi",
        "safety_identifier": "tally_1d5c0679c4a70ef7",
        "prompt_cache_key": "tally_1d5c0679c4a70ef7",
    }
    [row] = request_rows(tally.flask_app)
    assert (row.endpoint, row.status, row.cached_tokens) == ("responses", 200, 4)


def test_sdk_responses_streaming(sdk, tally, upstream):
    upstream.reply(events=response_events(["Hel", "lo"]), done=False)
    stream = sdk.responses.create(
        model="openai/gpt-4o-mini", input="Hi", safety_identifier="user_2N4Z", stream=True
    )
    events = list(stream)
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text == "Hello"
    assert events[-1].type == "response.completed"
    assert events[-1].response.usage.total_tokens == 13
    [row] = wait_for(lambda: request_rows(tally.flask_app))
    assert (row.endpoint, row.stream, row.status, row.completion_tokens) == (
        "responses",
        True,
        200,
        2,
    )
    assert row.user.external_id == "user_2N4Z"


def test_sdk_responses_stream_cut_raises_with_tallys_message(sdk, upstream):
    upstream.reply(events=response_events(["Hel"], final=""), done=False)
    stream = sdk.responses.create(model="openai/gpt-4o-mini", input="Hi", stream=True)
    with pytest.raises(openai.APIError) as info:
        list(stream)
    assert "ended the stream before response.completed" in info.value.message


def test_sdk_embeddings_create(sdk, tally, upstream):
    configure(tally.flask_app, hash_mode="none", dialect="openai")
    upstream.reply(json=embedding_answer(2))
    result = sdk.embeddings.create(
        model="openai/text-embedding-3-small", input=["a", "b"], user="user_2N4Z"
    )
    assert [d.embedding for d in result.data] == [[0.25, -0.5, 0.125]] * 2
    assert result.usage.prompt_tokens == 5
    assert upstream.last.body["user"] == "tally_user_2N4Z"
    assert upstream.last.body == {
        "model": "openai/text-embedding-3-small",
        "input": ["a", "b"],
        "encoding_format": "base64",  # the SDK's own default, passed through
        "user": "tally_user_2N4Z",
    }
    [row] = request_rows(tally.flask_app)
    assert (row.endpoint, row.prompt_tokens) == ("embeddings", 5)
