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

from tests.fakes import chunks, completion
from tests.support import configure, request_rows, wait_for

JS = Path(__file__).parent / "js"

if not (shutil.which("node") and (JS / "node_modules" / "ai").is_dir()):
    if os.environ.get("TALLY_REQUIRE_NODE"):
        raise RuntimeError("Node.js and `npm ci --prefix tests/js` are required")
    pytest.skip("Node.js or tests/js/node_modules missing", allow_module_level=True)


def run_sdk(tally, mode: str, user: str) -> dict:
    done = subprocess.run(
        ["node", str(JS / "client.mjs"), f"{tally.url}/v1", tally.key, mode, user],
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
