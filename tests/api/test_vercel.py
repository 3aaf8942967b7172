"""The Vercel AI SDK (@ai-sdk/openai with baseURL pointed at Tally), run by Node.

The SDK is installed by `npm ci --prefix tests/js` (.ci/run does it); without it these
tests skip, unless TALLY_REQUIRE_NODE is set.
"""

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.helpers.payloads import chunks, completion, response_events, response_object
from tests.helpers.rows import configure, request_rows
from tests.helpers.waiting import wait_for

JS = Path(__file__).resolve().parents[1] / "js"  # tests/js

if not (shutil.which("node") and (JS / "node_modules" / "ai").is_dir()):
    if os.environ.get("TALLY_REQUIRE_NODE"):
        raise RuntimeError("Node.js and `npm ci --prefix tests/js` are required")
    pytest.skip("Node.js or tests/js/node_modules missing", allow_module_level=True)


def run_sdk(tally, mode: str, user: str, api: str = "chat") -> dict:
    done = subprocess.run(
        ["node", str(JS / "client.mjs"), f"{tally.url}/v1", tally.key, mode, user, api],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_vercel_generate_text(tally, upstream):
    configure(tally.flask_app, hash_mode="none")
    upstream.reply(json=completion("Hello from upstream"))
    result = run_sdk(tally, "generate", "user_2N4Z")
    assert result["text"] == "Hello from upstream"
    assert result["usage"]["inputTokens"] == 12 and result["usage"]["outputTokens"] == 3
    assert upstream.last.body["user"] == "tally_user_2N4Z"
    assert upstream.last.body["messages"] == [{"role": "user", "content": "Hi there"}]


def test_vercel_stream_text(tally, upstream):
    upstream.reply(events=chunks(["Hel", "lo", "!"]))
    result = run_sdk(tally, "stream", "user_2N4Z")
    assert "".join(result["parts"]) == "Hello!"
    assert result["finishReason"] == "stop"
    assert result["usage"]["outputTokens"] == 3
    [row] = wait_for(lambda: request_rows(tally.flask_app))
    assert (row.stream, row.status, row.completion_tokens) == (True, 200, 3)
    assert row.user.external_id == "user_2N4Z"


def test_vercel_default_provider_streams_through_the_responses_api(tally, upstream):
    configure(tally.flask_app, hash_mode="none", dialect="openai")
    upstream.reply(events=response_events(["Hel", "lo", "!"]), done=False)
    result = run_sdk(tally, "stream", "user_2N4Z", api="responses")
    assert "".join(result["parts"]) == "Hello!"
    assert result["finishReason"] == "stop" and result["errors"] == []
    assert result["usage"]["inputTokens"] == 11 and result["usage"]["outputTokens"] == 2
    assert upstream.last.path == "/api/v1/responses"
    assert upstream.last.body["safety_identifier"] == "tally_user_2N4Z"
    assert "user" not in upstream.last.body
    [row] = wait_for(lambda: request_rows(tally.flask_app))
    assert (row.endpoint, row.stream, row.status, row.cached_tokens) == ("responses", True, 200, 4)
    assert row.user.external_id == "user_2N4Z"


def test_vercel_default_provider_generate_text(tally, upstream):
    upstream.reply(json=response_object("Hello from upstream"))
    result = run_sdk(tally, "generate", "user_2N4Z", api="responses")
    assert result["text"] == "Hello from upstream"
    assert upstream.last.path == "/api/v1/responses"
    [row] = request_rows(tally.flask_app)
    assert (row.endpoint, row.prompt_tokens) == ("responses", 11)


def test_vercel_sees_a_cut_responses_stream_as_an_error(tally, upstream):
    upstream.reply(events=response_events(["Hel"], final=""), done=False)
    result = run_sdk(tally, "stream", "user_2N4Z", api="responses")
    assert result["parts"] == ["Hel"]
    # The SDK reports the Responses API's error event as an error part; its finish reason
    # stays "unknown" (no response.completed), never "stop".
    assert result["finishReason"] == "unknown", result
    assert any("ended the stream before response.completed" in e for e in result["errors"])
